"""The one base class every protection (uge, em, tap, random, ...) implements.

A protection only computes the images it wants, `perturb(data) -> x_u` (float, [0, 1] pixel
units, N x C x H x W, not yet projected). The base class owns the rest: choosing the protected
fraction, the projection onto the method's norm ball, [0, 255] clamping, 8-bit quantisation,
checks and writing the published dataset.

Norms (class attribute `norm`):
  linf  |x_q - x|_inf <= rho (the default; most methods)
  l2    ||x_q - x||_2 <= rho * sqrt(C * H * W) per item: rho is the root-mean-square change per
        value, the parameterisation of LSP (Yu et al. 2022); AR's "L2 eps = 1" on 32 x 32 RGB
        images is rho = 1 / sqrt(3072) = 0.018
  l0    a few whole pixels change by any amount (OPS); the method bounds how many

Every protection is built the same way, `cls(context, settings=None, preset=None, **settings)`;
the ProtectionContext carries what is not a setting (the authorized networks and their recipe,
the work folder, progress bars):

    prot = get_protection("random")(rho=8 / 255, seed=0)
    out = prot.protect(load_dataset("cifar10", per_class=100), "pub/random")
    key = NetSpec.create("cnn", 10, 3, seed=1234)
    uge = get_protection("uge")(ProtectionContext([key], recipe="cpu"), preset="paper")
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.base import ImageDataset
from ..data.published import check_out_dir, write_published
from ..errors import LearnlockError, require
from ..models import NetSpec
from ..recipe import Recipe, get_recipe
from ..registry import Registry, check_field_types, check_settings


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ProtectionSettings:
    """Settings shared by every protection; a method subclasses this (frozen) with its own fields.

    Fields annotated float / int / bool / str are type-checked on construction.
    """

    rho: float = 8 / 255  # L-inf radius in [0, 1] pixel units (8/255 = 8 grey levels)
    seed: int = 0  # seeds the method's randomness and the choice of protected items
    fraction: float = 1.0  # share of items protected, in (0, 1]; the rest keep their clean pixels

    def __post_init__(self):
        rho = self.rho
        self.require(_is_number(rho) and math.isfinite(rho),
                     f"rho must be a finite number in (0, 1] ([0,1] pixel units), got {rho!r}")
        self.require(rho <= 1, f"rho is an L-inf radius in [0,1] pixel units; did you mean {rho:g}/255 = "
                               f"{rho / 255:.4f}?")
        self.require(rho > 0, f"rho must be in (0, 1] ([0,1] pixel units, e.g. 8/255 = 0.0314), got {rho}")
        self.require(_is_number(self.fraction) and 0 < self.fraction <= 1,
                     f"fraction is the share of items to protect, in (0, 1]; got {self.fraction!r}")
        check_field_types(self)

    def require(self, ok: bool, message: str) -> None:
        """Raise LearnlockError naming the settings class unless `ok`; `message` says how to fix the value."""
        require(ok, f"{type(self).__name__}: {message}")


@dataclass(frozen=True)
class ProtectionContext:
    """What a protection is given besides its settings, the same for every method; a method uses
    what it needs (only methods with needs_key read `authorized` and `recipe`).

    authorized: the authorized network(s), NetSpec keys (a single NetSpec is taken as a list of one)
    recipe: how the authorized user will train, a Recipe or a recipe name
    workdir: folder for resumable state and cached surrogates, used when apply() is given none
    progress: show progress bars
    """

    authorized: list = field(default_factory=list)
    recipe: Recipe | str = "cpu"
    workdir: Path | None = None
    progress: bool = True

    def __post_init__(self):
        keys = self.authorized
        object.__setattr__(self, "authorized", [keys] if isinstance(keys, NetSpec) else list(keys))
        object.__setattr__(self, "recipe", get_recipe(self.recipe))
        object.__setattr__(self, "workdir", None if self.workdir is None else Path(self.workdir))


def project_quantize(x: torch.Tensor, x_u: torch.Tensor, rho: float) -> torch.Tensor:
    """Project float images `x_u` ([0, 1] units) onto the L-inf ball of radius `rho` around the
    uint8 images `x`, in 8-bit: returns uint8 x_q with |x_q/255 - x/255| <= rho exactly.

    x_u * 255 is rounded to integers first; then the integer change is clamped to [-k, k]
    with k = floor(255 * rho + 1e-9), and the result to [0, 255]. Why floor: after
    quantisation a change is a whole number m of grey levels, and m/255 <= rho holds exactly
    when m <= floor(255 * rho). Rounding 255 * rho instead would allow one level too many
    whenever its fraction is >= .5 (rho = 0.0431 -> 10.99 levels -> 11 > 10.99). The 1e-9
    keeps rho = k/255 (which can land just below k/255 in floating point) at k levels.
    Clamping after rounding, not before, keeps the result inside the ball whatever the rounding.
    """
    if x.dtype != torch.uint8:
        raise LearnlockError(f"project_quantize needs uint8 clean images, got {x.dtype}")
    if tuple(x_u.shape) != tuple(x.shape):
        raise LearnlockError(f"perturbed images have shape {tuple(x_u.shape)}, expected {tuple(x.shape)}")
    if not _is_number(rho) or not 0 < rho <= 1:
        raise LearnlockError(f"rho must be in (0, 1] ([0,1] pixel units), got {rho!r}")
    x_u = x_u.detach().to(device=x.device, dtype=torch.float32)
    if torch.isnan(x_u).any():
        raise LearnlockError("perturbed images contain NaN; cannot quantize")
    k = math.floor(255 * rho + 1e-9)
    q = torch.round(x_u.mul(255).clamp_(-512, 767)).to(torch.int16)  # clamp first: inf / huge values
    delta = (q - x.to(torch.int16)).clamp_(-k, k)
    return (x.to(torch.int16) + delta).clamp_(0, 255).to(torch.uint8)


def project_l2_quantize(x: torch.Tensor, x_u: torch.Tensor, radius: float) -> torch.Tensor:
    """Project float images `x_u` onto the per-item L2 ball of `radius` ([0, 1] units) around the
    uint8 images `x`, in 8-bit: returns uint8 x_q with ||x_q/255 - x/255||_2 <= radius exactly.

    Why rounding toward zero: each quantised change is then no larger in magnitude than the
    projected float change, so the norm cannot grow; the scale is shrunk by 1e-6 so float error
    in the norm cannot push it over either. Clamping to [0, 255] only shrinks changes further.
    """
    if x.dtype != torch.uint8:
        raise LearnlockError(f"project_l2_quantize needs uint8 clean images, got {x.dtype}")
    if tuple(x_u.shape) != tuple(x.shape):
        raise LearnlockError(f"perturbed images have shape {tuple(x_u.shape)}, expected {tuple(x.shape)}")
    if not _is_number(radius) or not radius > 0:
        raise LearnlockError(f"the L2 radius must be > 0, got {radius!r}")
    x_f = x.float()
    d = x_u.detach().to(device=x.device, dtype=torch.float32).mul(255) - x_f
    norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (255 * radius / norms).clamp(max=1.0) * (1 - 1e-6)
    d = d * scale.view(-1, *([1] * (d.dim() - 1)))
    q = (x_f + d).clamp_(0, 255) - x_f
    return (x_f + q.trunc()).round_().clamp_(0, 255).to(torch.uint8)


def quantize(x_u: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] images to uint8, rounding to the nearest grey level (no norm constraint)."""
    return torch.round(x_u.detach().float().mul(255).clamp_(0, 255)).to(torch.uint8)


# The attacks every protection's data face (registry names; see `Protection.threat_model`).
GENERIC_ATTACKS = ("retrain", "cutout", "mixup", "cutmix", "iss-jpeg", "iss-grayscale", "iss-bits", "ueraser",
                   "adversarial-training", "adversarial-training-rho", "orthogonal-projection", "purify",
                   "purify-diffpure", "recover", "recover-random")


class Protection(ABC):
    """Base class: subclass, set `Settings`, implement `perturb`, decorate with `@register_protection`.

    `apply(data)` -> uint8 protected images (same shape, order, labels); `protect(data, out)`
    writes them as a published dataset. After `apply`, `self.protected_index` holds the sorted
    indices of the protected items (all of them when settings.fraction == 1).
    """

    name: str = ""
    Settings: type[ProtectionSettings] = ProtectionSettings
    norm: str = "linf"  # linf | l2 | l0 (see the module docstring)
    # Protections that take the authorized network(s) say so; the CLI and the scenarios ask this,
    # never the method's name. They read context.authorized, and `issued_keys()` is what the
    # authorized user receives, one per authorized network. A method that trains its key
    # (`trains_key`, lock) has it only after `apply`: no file written before can hold it.
    needs_key: bool = False
    trains_key: bool = False
    presets: dict[str, dict] = {}  # named settings, preset=NAME (uge's paper; every method's "smoke": tiny, for tests)
    default_preset: str | None = None  # the preset used when neither a preset nor settings are given
    # The threat model (`threat_model()`, shown by `learnlock report`): the attacks a method's data
    # face beyond the generic ones (attacks that know this method's scheme), and what its hacker knows.
    scheme_attacks: tuple[str, ...] = ()
    threat: str = ("The hacker holds the published images and labels and knows the method and its settings "
                   "(the manifest is public), but not the clean originals.")

    def __init__(self, context: ProtectionContext | None = None, settings: ProtectionSettings | None = None,
                 preset: str | None = None, **overrides):
        name = self.name or type(self).__name__
        self.context = ProtectionContext() if context is None else context
        if not isinstance(self.context, ProtectionContext):
            raise LearnlockError(f"{name}: the first argument is a ProtectionContext(authorized=[NetSpec...], "
                                 f"recipe=...), got {type(self.context).__name__}")
        self.preset, self.settings = self.resolve_settings(settings, preset, **overrides)
        self.authorized = self.context.authorized
        self.recipe = self.context.recipe
        if self.needs_key and not self.authorized:
            raise LearnlockError(f"{name} needs at least one authorized network (a NetSpec key): "
                                 "ProtectionContext(authorized=[NetSpec...]), or --authorized on the command line")
        self.protected_index: torch.Tensor | None = None
        self.progress = self.context.progress  # progress bars for long optimisations

    @classmethod
    def resolve_settings(cls, settings: ProtectionSettings | None = None, preset: str | None = None,
                         **overrides) -> tuple[str | None, ProtectionSettings]:
        """(preset, settings) from explicit settings, a preset name and overrides, every value
        checked; needs no data and no key, so a command refuses a bad setting before it loads data."""
        name = cls.name or cls.__name__
        if settings is not None:
            preset = None  # explicit settings win over any preset
        elif preset is None:
            preset = cls.default_preset
        if preset is not None:
            if preset not in cls.presets:
                raise LearnlockError(f"unknown {name} preset {preset!r}; choose one of: "
                                     f"{', '.join(cls.presets) or '(none: this method has no presets)'}")
            overrides = {**cls.presets[preset], **overrides}
        if settings is None:
            settings = cls.Settings() if not overrides else None
        elif not isinstance(settings, cls.Settings):
            raise LearnlockError(
                f"{name}: settings must be {cls.Settings.__name__}, got {type(settings).__name__}"
            )
        check_settings(f"protection {name!r}", cls, overrides)
        if settings is None:  # build straight from the overrides: defaults are never half-validated
            settings = cls.Settings(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        return preset, settings

    @abstractmethod
    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        """Float N x C x H x W images in [0, 1] units the method wants (projected afterwards)."""

    def choose_protected(self, n: int) -> torch.Tensor:
        """Sorted indices of the items to protect: all, or a seeded `fraction` of them."""
        if self.settings.fraction >= 1:
            return torch.arange(n)
        k = math.floor(self.settings.fraction * n + 0.5)
        g = torch.Generator().manual_seed(self.settings.seed)
        return torch.randperm(n, generator=g)[:k].sort().values

    def apply(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        """uint8 protected images: perturb the chosen items, project onto the rho-ball, quantize.
        `workdir` (default: the context's) keeps resumable state."""
        workdir = self.context.workdir if workdir is None else workdir
        for key in self.authorized:  # a key made for other images or classes fails before the work
            key.check_fits(data)
        index = self.choose_protected(len(data))
        out = data.images.clone()
        if len(index):
            sub = data if len(index) == len(data) else data.subset(index)
            x_u = self.perturb(sub, workdir)
            if not isinstance(x_u, torch.Tensor) or not x_u.is_floating_point():
                raise LearnlockError(
                    f"protection {self.name!r}: perturb must return a float tensor, got "
                    f"{getattr(x_u, 'dtype', type(x_u).__name__)}"
                )
            if tuple(x_u.shape) != tuple(sub.images.shape):
                raise LearnlockError(
                    f"protection {self.name!r}: perturb returned shape {tuple(x_u.shape)}, "
                    f"expected {tuple(sub.images.shape)}"
                )
            x_u = x_u.detach().cpu()
            if not torch.isfinite(x_u).all():
                raise LearnlockError(
                    f"protection {self.name!r} produced NaN or infinite pixels; its optimisation diverged "
                    "(try a smaller step size or another seed)"
                )
            out[index] = self.project(sub.images, x_u)
        self.protected_index = index
        return out

    def l2_radius(self, image_shape) -> float:
        """The per-item L2 radius of an `l2` method, [0, 1] units: rho * sqrt(C * H * W)."""
        return self.settings.rho * math.sqrt(math.prod(image_shape))

    def project(self, x: torch.Tensor, x_u: torch.Tensor) -> torch.Tensor:
        """uint8 images inside the method's norm ball around the clean uint8 `x`."""
        if self.norm == "linf":
            return project_quantize(x, x_u, self.settings.rho)
        if self.norm == "l2":
            return project_l2_quantize(x, x_u, self.l2_radius(x.shape[1:]))
        if self.norm == "l0":
            return quantize(x_u)
        raise LearnlockError(f"protection {self.name!r} has unknown norm {self.norm!r}")

    def manifest_settings(self) -> dict:
        """The resolved settings, as stored in the manifest."""
        return dataclasses.asdict(self.settings)

    def protect(self, data: ImageDataset, out_dir, *, overwrite: bool = False, authorized: dict | None = None,
                extra: dict | None = None, files: dict[str, bytes] | None = None, workdir: Path | None = None) -> Path:
        """Check `out_dir` first, then apply and write the published dataset; returns its path.
        The keys to hand over are then `issued_keys()`."""
        check_out_dir(out_dir, overwrite, source=data)
        images = self.apply(data, workdir)
        return self.write(data, images, out_dir, self.issued_keys(data), overwrite=overwrite,
                          authorized=authorized, extra=extra, files=files)

    def write(self, data: ImageDataset, images: torch.Tensor, out_dir, keys: list, *, overwrite: bool = False,
              authorized: dict | None = None, extra: dict | None = None, files: dict[str, bytes] | None = None) -> Path:
        """Write `apply`'s images as the published dataset, its manifest naming and authenticated by
        `keys` (the issued keys)."""
        self.published_images = images  # kept: publish's checks need no reread
        return write_published(
            out_dir, data, images,
            method=self.name, rho=self.settings.rho, settings=self.manifest_settings(),
            seed=self.settings.seed, authorized=authorized or self.authorized_info(keys),
            protected=self.protected_index.tolist(),
            extra={"norm": self.norm_info(data), **self.manifest_extra(), **(extra or {})},
            files=files, overwrite=overwrite, keys=keys,  # the keys authenticate the manifest
        )

    def norm_info(self, data: ImageDataset) -> dict:
        """How the perturbation is bounded, for the manifest."""
        if self.norm == "l2":
            return {"norm": "l2", "radius": self.l2_radius(data.images.shape[1:]), "units": "[0,1] pixels"}
        if self.norm == "l0":
            return {"norm": "l0", "pixels": getattr(self.settings, "pixels", 1)}
        return {"norm": "linf", "radius": self.settings.rho, "units": "[0,1] pixels"}

    def issued_keys(self, data: ImageDataset | None = None) -> list:
        """The key(s) the authorized user gets after protection (files to hand over): by default
        the authorized networks given; `keyed` wraps them in its key layer, `lock` adds its transform."""
        return list(self.authorized) if self.needs_key else []

    def authorized_info(self, keys: list | None = None) -> dict | None:
        """What the manifest says about the issued `keys` (default `issued_keys()`) and their
        recipe; None without a key."""
        if not self.needs_key:
            return None
        keys = self.issued_keys() if keys is None else keys
        return {"networks": [{"arch": k.arch, "kwargs": k.kwargs, "num_classes": k.num_classes,
                              "in_channels": k.in_channels, "fingerprint": k.fingerprint} for k in keys],
                "recipe": self.recipe.to_dict()}

    def manifest_extra(self) -> dict:
        """Method-specific results for the manifest (diagnostics, optimisation log), after apply."""
        return {}

    @classmethod
    def threat_model(cls) -> dict:
        """{"attacks": registry names, "assumes": words}: every attack this method's published data
        should be measured against (`learnlock report` shows one it was not as "not measured"):
        retraining, augmentations, image squeezing, adversarial training, purification and
        weight-space recovery for any method; distillation when an authorized network is trained;
        the method's own `scheme_attacks`."""
        keyed = ("distill", "distill-proxy") if cls.needs_key else ()
        return {"attacks": [*GENERIC_ATTACKS, *keyed, *cls.scheme_attacks], "assumes": cls.threat}

    @classmethod
    def describe(cls) -> str:
        """One line for `learnlock list`: name, norm, presets and every setting's default."""
        fields = [f"{f.name}={f.default:.4g}" if isinstance(f.default, float) else f"{f.name}={f.default!r}"
                  for f in dataclasses.fields(cls.Settings) if f.default is not dataclasses.MISSING]
        presets = f" (presets: {', '.join(cls.presets)})" if cls.presets else ""
        return f"{cls.name} [{cls.norm}]{presets}: {', '.join(fields)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


# the fixed arguments of every protection's constructor; the rest are its Settings' fields
PROTECTIONS = Registry("protection", fixed=("context", "settings", "preset"), kind=Protection)
register_protection = PROTECTIONS.register  # class decorator: register a Protection subclass, set its `name`
list_protections = PROTECTIONS.names
get_protection = PROTECTIONS.get
# create_protection("random", rho=8/255, seed=1): the class by name, built with checked settings
create_protection = PROTECTIONS.create
