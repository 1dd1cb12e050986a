"""Keyed error-minimising noise: conditional learnability through a key with a secret blind spot.

The authorized network is a `keyed` NetSpec: a frozen, secret key layer (`learnlock.keys.layers`)
that annihilates a subspace S, then an ordinary architecture. The published noise lies in S only
and is error-minimising there (min-min, Huang et al. 2021, against surrogates that do NOT have
the key): every network that sees S learns the shortcut and fails on clean test images; the
authorized network never sees the noise and learns the images.

Norm L-inf, rho (default 8/255) in [0, 1] pixel units. Every min-min step projects delta onto S
and then scales it into the rho-ball (scaling keeps it in S; clipping would not); the export's
[0, 1] clipping and 8-bit rounding leave a small residual outside S, measured and written to the
manifest (`extra.residual`). Sample-wise by default; the `em` engine does the optimisation.

    key = NetSpec.create("cnn", 10, 3, seed=seed_from_secret("my pass phrase"))
    prot = create_protection("keyed", ProtectionContext([key]), family="spectral", rho=8 / 255)
    prot.protect(load_dataset("cifar10", per_class=100), "pub/keyed")
    prot.issued_keys(data)[0].save("key.safetensors")   # the keyed network: give it to the user

Threat model and weaknesses: see README ("keyed") and BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.base import ImageDataset
from ..errors import LearnlockError
from ..keys.keyed import key_layer_of, keyed_spec
from ..keys.layers import KeyLayer, family_params, get_key_layer, list_key_layers
from ..models import NetSpec
from ..training import fit
from .base import ProtectionContext, register_protection
from .em import EMSettings, MinMin


AUTO_LUMA = {"colour": 0.9, "mosaic": 0.9}  # measured on colour (BENCHMARKS.md): grayscale and JPEG-30 keep the
#                                            noise, key cost 2-3 points; mosaic is the colour key per tile


@dataclass(frozen=True)
class KeyedSettings(EMSettings):
    # The authorized net never sees the noise, so its budget is bounded by what people may see, not
    # by what the key tolerates. On the CPU benchmark (BENCHMARKS.md, "Keyed learnability") a wrong
    # key learned at 8/255, 16/255 held only against plain hackers, and 32/255 was the best point of
    # the front (PSNR about 24 dB: visible). Pass rho to trade separation for image quality.
    rho: float = 32 / 255
    surrogate: str = "cnn"         # key-less surrogate of the min-min (cnn: CPU-sized; resnet18 on a GPU)
    max_rounds: int = 20           # min-min rounds at most (measured: see BENCHMARKS.md)
    family: str = "colour"         # key family (learnlock.keys.layers): colour | mosaic | spectral | block
    dims: int = 1                  # colour directions the key removes (per pixel, or per chosen frequency);
    #                                block: patch dimensions removed per k x k block
    bins: float = 0.5              # spectral: share of the frequency classes in [fmin, fmax] in the key
    fmin: float = 1.0              # spectral: lowest frequency radius in the key, cycles per image;
    #                                block: lowest DCT radius in the patch (1: the block mean is kept)
    fmax: float | None = None      # spectral / block: highest (None: no upper bound)
    k: int = 4                     # block: the block side in pixels (the image size must be a multiple)
    dc: bool = False               # block: the block mean is in S (and counts in dims): noise >= 0 fits black blocks
    tile: int = 2                  # mosaic: the tile side in pixels (one secret colour per tile; must divide the size)
    # squared cosine of each removed colour with the luma axis, azimuth secret (None: random colours).
    # auto: 0.9 for colour and mosaic keys (a random one can be isoluminant: grayscale then removes all of the
    # noise, measured in BENCHMARKS.md), None for spectral keys (their colour changes per frequency)
    luma: float | str | None = "auto"
    # Teacher-aware noise: the min-min fits (1 - mix) * one-hot label + mix * the soft outputs (at
    # `temperature`) of the authorized network trained on the clean data, so the shortcut also
    # explains what a distilling hacker is taught. 0: labels only (plain error-minimising).
    # alternating projections with the [0, 1] box in every min-min step (0: none, the box is met only at
    # export; N: N rounds): on Fashion-MNIST the export clipped 16 % of a block key's noise energy.
    # Class-wise: the box of a black image (noise >= 0; with a block key, set dc so S holds such noise)
    fit_box: int = 0
    teacher_mix: float = 0.0
    temperature: float = 4.0
    # min-min: error-minimising noise in S against the surrogate (the settings above). pattern: no
    # surrogate; one synthetic pattern per class in S that repeats every `period` pixels, filled to the
    # L-inf budget (a class-wise shortcut, like lsp's, that only the key's blind spot holds). Measured on
    # Fashion-MNIST with a block key (BENCHMARKS.md, "A class pattern for the grey-image key"): it pulls
    # the cnn hacker a little further than min-min noise (0.53 against 0.58) but holds no hacker at 0.5.
    noise: str = "min-min"
    period: int = 4                # pattern: its period in pixels (block keys: a multiple of k)

    def __post_init__(self):
        super().__post_init__()
        self.require(0 <= self.teacher_mix <= 1,
                     f"teacher_mix is a share in [0, 1], got {self.teacher_mix!r}")
        self.require(self.fit_box >= 0,
                     f"fit_box is a number of alternating projection rounds >= 0, got {self.fit_box!r}")
        self.require(self.temperature > 0,
                     f"temperature must be > 0, got {self.temperature!r}")
        self.require(self.family in list_key_layers(),
                     f"unknown key family {self.family!r}; choose one of {list_key_layers()}")
        self.require(self.noise in ("min-min", "pattern"), f"noise is min-min or pattern, got {self.noise!r}")
        self.require(self.period >= 1,
                     f"period is a pattern period in pixels, an integer >= 1; got {self.period!r}")
        self.require(self.noise != "pattern" or self.family != "block" or self.period % self.k == 0,
                     f"a block key's pattern must repeat whole blocks: period {self.period} is not a multiple of "
                     f"k={self.k}")
        self.require(self.noise != "pattern" or (self.teacher_mix == 0 and self.fit_box == 0),
                     "teacher_mix and fit_box shape min-min noise; the pattern noise has no min-min (set noise "
                     "to min-min, or leave them at 0)")
        self.require(not isinstance(self.luma, str) or self.luma == "auto",
                     f"luma is auto, null (random colours) or a squared cosine in [0, 1]; got {self.luma!r}")

    def key_settings(self) -> dict:
        out = {p: getattr(self, p) for p in family_params(self.family)}
        if out.get("luma") == "auto":
            out["luma"] = AUTO_LUMA.get(self.family)
        if out.get("dc") is False:   # the default: left out, so keys drawn before `dc` existed stay the same
            del out["dc"]
        return out


@register_protection("keyed")
class Keyed(MinMin):
    """Error-minimising noise inside the blind spot of a keyed authorized network (module docstring)."""

    Settings = KeyedSettings
    presets = {"smoke": dict(max_rounds=2, noise_steps=2, train_steps=2, batch_size=8)}
    needs_key = True
    scheme_attacks = ("key-estimate", "key-search", "key-search-gradient", "leaked-pairs")
    threat = ("The hacker holds the published images and labels and knows the key scheme (the key family and its "
              "public settings, which the manifest states), but not the key; it may hold clean auxiliary images, "
              "query the trained authorized network, or hold a few leaked (published, original) pairs.")

    def __init__(self, context: ProtectionContext | None = None, settings: KeyedSettings | None = None,
                 preset: str | None = None, **overrides):
        super().__init__(context, settings, preset, **overrides)
        if len(self.authorized) != 1:
            raise LearnlockError(f"keyed takes one authorized network, got {len(self.authorized)}: the noise must "
                                 "lie in the blind spot of every authorized network, and different keys share none")
        self.base = self.authorized[0]
        # the family turns the authorized recipe's augmentations into ones its key layer commutes with
        # (spectral: circular shifts; block: shifts by multiples of k), and the manifest carries it
        family, key_settings = self.family_and_settings(self.base)
        self.recipe = get_key_layer(family).authorized_recipe(self.recipe, key_settings)
        self._key: NetSpec | None = None
        self._soft: torch.Tensor | None = None
        self._layer: KeyLayer | None = None

    def family_and_settings(self, spec: NetSpec) -> tuple[str, dict]:
        if spec.arch == "keyed":
            return spec.kwargs["family"], dict(spec.kwargs.get("key_settings") or {})
        return self.settings.family, self.settings.key_settings()

    # ------------------------------------------------------------------ the key
    def key_for(self, data: ImageDataset) -> NetSpec:
        """The keyed network for images like `data`: the given key file, or the given plain
        network behind a key layer seeded by its fingerprint."""
        size = data.images.shape[-1]
        if data.images.shape[-2] != size:
            raise LearnlockError(f"keyed needs square images, got {tuple(data.images.shape[-2:])}")
        if self._key is None or self._key.kwargs["image_size"] != size:
            spec = self.base if self.base.arch == "keyed" else keyed_spec(
                self.base, self.settings.family, size, self.settings.key_settings())
            spec.check_fits(data)
            if spec.kwargs["image_size"] != size and spec.kwargs["family"] != "colour":
                raise LearnlockError(f"this key was made for {spec.kwargs['image_size']}-pixel images, the data "
                                     f"have {size}")
            self._key, self._layer = spec, key_layer_of(spec).eval()
        return self._key

    def issued_keys(self, data: ImageDataset | None = None) -> list:
        if data is None and self._key is None:
            if self.base.arch == "keyed":
                return [self.base]
            raise LearnlockError("keyed: the key depends on the image size; call issued_keys(data)")
        return [self.key_for(data) if data is not None else self._key]

    def layer(self) -> KeyLayer:
        if self._layer is None:
            raise LearnlockError("keyed: no key yet (call key_for(data) first)")
        return self._layer

    # ------------------------------------------------------------------ min-min hooks
    def in_blind_spot(self, d: torch.Tensor, rounds: int = 2, x: torch.Tensor | None = None) -> torch.Tensor:
        """Near the projection of d onto S ∩ rho-ball: a few alternating projections (clamp, P_S),
        then a per-item scaling that enforces the ball exactly (scaling keeps d in S; clamping
        alone would not). With `fit_box` and the images x, the alternation also clamps x + d into
        [0, 1], so less of the noise is cut at export (grey images with black backgrounds)."""
        layer = self.layer().to(d.device)
        rho = self.settings.rho
        # class-wise rows have no image of their own: they fit the box of a black image (noise >= 0),
        # which every image admits where it is black (needs S to hold non-negative noise: block `dc`)
        box = bool(self.settings.fit_box) and (x is not None or self.settings.classwise)
        if box and x is None:
            x = torch.zeros_like(d)
        d = layer.project(d)
        for _ in range(self.settings.fit_box if box else rounds):
            d = d.clamp(-rho, rho)
            if box:
                d = (x + d).clamp(0, 1) - x
            d = layer.project(d)
        return d * peak_scale(d, rho)

    def constrain(self, x, d):
        return self.in_blind_spot(d, x=x)  # [0, 1] clipping happens once, at export, and is measured

    def descent(self, grad):
        # steepest L-inf descent restricted to S: the sign of the gradient's S-component, back in S,
        # scaled to peak 1 (for the colour key this is a signed step on the colour coefficient)
        layer = self.layer().to(grad.device)
        v = layer.project(layer.project(grad).sign())
        return v * peak_scale(v, 1.0)

    def start_delta(self, delta):
        return self.in_blind_spot(delta)

    def ident_extra(self) -> dict:
        return {"key": self._key.fingerprint if self._key else None}

    def targets(self, idx):
        return None if self._soft is None else self._soft[idx.to(self._soft.device)]

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        self.key_for(data)
        if self.settings.noise == "pattern":
            self.reset()
            self.log, self.converged = [], None
            return data.float_images() + self.class_patterns(data)[data.labels]
        self._soft = self.teacher_targets(data) if self.settings.teacher_mix > 0 else None
        return super().perturb(data, workdir)

    def class_patterns(self, data: ImageDataset, rounds: int = 50) -> torch.Tensor:
        """num_classes x C x H x W: per class, a random tile of `period` pixels repeated over the image,
        put in S and pushed to the corners of the rho-ball by alternating sign and projection onto S
        (the L-inf budget filled as far as S allows), then scaled to peak rho exactly. Seeded."""
        s = self.settings
        c, h, w = data.images.shape[1:]
        g = torch.Generator().manual_seed(s.seed)
        tile = torch.randn((data.num_classes, c, s.period, s.period), generator=g)
        p = tile.repeat(1, 1, -(-h // s.period), -(-w // s.period))[:, :, :h, :w]
        layer = self.layer()
        with torch.no_grad():
            p = layer.project(p)
            for _ in range(rounds):
                p = layer.project(p.sign())
        peak = p.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return p * (s.rho / peak)

    def teacher_targets(self, data: ImageDataset) -> torch.Tensor:
        """(1 - mix) one-hot + mix softmax(T(x) / temperature), T the authorized network trained on
        the clean data with its own recipe (seeded: the same targets on a resume)."""
        s = self.settings
        teacher = fit(self._key.build(), data, self.recipe, progress=self.progress, desc="keyed teacher").eval()
        with torch.no_grad():
            dev = next(teacher.parameters()).device
            logits = torch.cat([teacher(b.to(dev).float().div(255)).cpu() for b in data.images.split(512)])
        onehot = F.one_hot(data.labels, data.num_classes).float()
        return (1 - s.teacher_mix) * onehot + s.teacher_mix * F.softmax(logits / s.temperature, dim=1)

    def apply(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        self.key_for(data)
        out = super().apply(data, workdir)
        self.residual = blind_spot_residual(self.layer(), data.images[self.protected_index],
                                            out[self.protected_index])
        return out

    # ------------------------------------------------------------------ manifest
    def manifest_settings(self) -> dict:
        return {**asdict(self.settings), "authorized_recipe": self.recipe.to_dict()}

    def manifest_extra(self) -> dict:
        layer = self.layer()
        return {**super().manifest_extra(),
                "key": {"family": layer.family, "settings": layer.public_settings(), "removed_dims": layer.dim(),
                        "removed_share": round(layer.cost(), 6)},
                "residual": getattr(self, "residual", None)}


def peak_scale(d: torch.Tensor, bound: float) -> torch.Tensor:
    """Per-item factor (<= 1) that brings the largest |value| of each item down to `bound`."""
    peak = d.flatten(1).abs().amax(1).clamp_min(1e-12)
    return (bound / peak).clamp(max=1.0).view(-1, *([1] * (d.dim() - 1)))


@torch.no_grad()
def blind_spot_residual(layer: KeyLayer, clean: torch.Tensor, published: torch.Tensor) -> dict:
    """How much of the published change lies outside the blind spot S (what the authorized network
    sees of it): uint8 clean and published images -> levels (of 255) and energy shares."""
    if len(clean) == 0:
        return {"outside_max_levels": 0.0, "outside_rms_levels": 0.0, "outside_energy_share": 0.0,
                "inside_rms_levels": 0.0}
    outside_sq = inside_sq = 0.0
    peak, count = 0.0, 0
    for a, b in zip(clean.split(512), published.split(512)):
        d = b.float() - a.float()  # levels
        r = layer(d)                # the part the key layer lets through
        outside_sq += float(r.pow(2).sum())
        inside_sq += float((d - r).pow(2).sum())
        peak = max(peak, float(r.abs().max()))
        count += d.numel()
    total = outside_sq + inside_sq
    return {"outside_max_levels": round(peak, 4), "outside_rms_levels": round((outside_sq / count) ** 0.5, 4),
            "outside_energy_share": round(outside_sq / total, 6) if total else 0.0,
            "inside_rms_levels": round((inside_sq / count) ** 0.5, 4)}
