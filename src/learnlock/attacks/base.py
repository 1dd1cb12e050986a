"""The one base class of every attack (hacker scenario or countermeasure).

An attack changes only what its threat model allows, and always trains through the one loop
(`learnlock.training.fit`): a transform of the training images (`transform`, e.g. JPEG or
diffusion purification), of the test images (`transform_test`, grayscale ISS), a loss
(`loss`, distillation), or a training-time procedure (`callbacks`, e.g. PGD examples).

    attack = get_attack("iss-jpeg")(quality=10)
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"])
    acc = evaluate(model, attack.transform_test(test))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from torch import nn

from ..data import ImageDataset
from ..errors import LearnlockError, require
from ..models import create_model
from ..recipe import Recipe
from ..registry import Registry, check_field_types, check_settings
from ..training import Callback, Loss, cross_entropy, evaluate, fit


CALIBRATION = ("calibrated", "uncalibrated")


@dataclass
class AttackContext:
    """What the threat model gives the attacker beyond the published data."""

    teacher: nn.Module | None = None       # the trained authorized network (distillation)
    aux: ImageDataset | None = None        # clean data disjoint from the protected set
    workdir: Path | None = None            # where an attack may cache what it trains (e.g. a DDPM)
    scheme: dict | None = None             # what the published manifest says of the key (family, public settings)
    rho: float | None = None               # the published L-inf budget (the manifest's rho), [0, 1] pixel units
    originals: ImageDataset | None = None  # clean originals of some published images (same ids): a leak
    progress: bool = True


@dataclass(frozen=True)
class AttackSettings:
    """Settings of an attack; a method subclasses this (frozen) with its own fields, units in
    comments. Fields annotated float / int / bool / str are type-checked on construction and floats
    must be finite; methods add their own ranges in `check`."""

    def __post_init__(self):
        check_field_types(self)
        self.check()

    def check(self) -> None: ...

    def require(self, ok: bool, message: str) -> None:
        require(ok, f"{type(self).__name__}: {message}")


class Attack:
    """Base class: subclass, set `Settings`, override the hooks you need, and decorate with
    `@register_attack(name)`. `train` returns a hacker model in eval mode."""

    name = ""
    label = ""   # how tables name its hackers (UGE's "Normal", "Distill"); default: the name
    Settings: type[AttackSettings] = AttackSettings
    needs: tuple[str, ...] = ()   # fields of AttackContext that must be set
    # named groups of settings, as for protections: every attack declares "smoke", tiny settings that
    # run in seconds on a CPU (`cls(**cls.presets["smoke"])`; the tests and bench/gpu_smoke.py)
    presets: dict[str, dict] = {}
    # What aux data (context.aux) must share with the published set, when the attack uses them:
    # "size" (any images of the same channels and size: a DDPM, a key estimate) or "classes" (also
    # the same class names in the same order: per-class statistics, fine-tuning on aux labels).
    aux_match: str = "size"
    # How the attack's published effect was checked at the 10k tier (BENCHMARKS.md, "The 10k tier:
    # calibration"): (status, what was measured), status one of CALIBRATION. Audits and reports mark an
    # "uncalibrated" attack, so nobody reads a low ratio under it as the protection's strength when it may
    # be this evaluator's. None: no published effect to check it against.
    calibration: tuple[str, str] | None = None

    @classmethod
    def uncalibrated(cls) -> str | None:
        """What was measured, where this evaluator did not reproduce the attack's published effect."""
        return cls.calibration[1] if cls.calibration and cls.calibration[0] == "uncalibrated" else None

    def __init__(self, settings: AttackSettings | None = None, **overrides):
        check_settings(f"attack {self.name!r}", type(self), overrides)
        settings = settings or self.Settings()
        self.settings = replace(settings, **overrides) if overrides else settings

    def uses_aux(self) -> bool:
        """Whether this attack, as set, reads clean aux data when given (an audit then sets an
        aux-only baseline beside it, and its cells depend on the aux set)."""
        return "aux" in self.needs

    def check_aux(self, aux: ImageDataset, published: ImageDataset) -> None:
        """Refuse aux data this attack cannot use with `published` (see `aux_match`)."""
        if aux.in_channels != published.in_channels or aux.images.shape[-2:] != published.images.shape[-2:]:
            raise LearnlockError(f"attack {self.name!r}: aux {aux.source} has {aux.in_channels}-channel "
                                 f"{tuple(aux.images.shape[-2:])} images, the published data "
                                 f"{published.in_channels}-channel {tuple(published.images.shape[-2:])}; give an "
                                 "`aux` set of the published images' size")
        if self.aux_match == "classes" and tuple(aux.classes) != tuple(published.classes):
            raise LearnlockError(f"attack {self.name!r} uses per-class statistics of the aux data, but aux "
                                 f"{aux.source} has classes {list(aux.classes)[:4]}..., the published data "
                                 f"{list(published.classes)[:4]}...; give an `aux` set with the same class names in "
                                 "the same order")

    def loss(self, context: AttackContext) -> Loss:
        return cross_entropy

    def callbacks(self, context: AttackContext) -> list[Callback]:
        return []

    def transform(self, data: ImageDataset, context: AttackContext) -> ImageDataset:
        """The training images the attacker actually trains on (default: as published)."""
        return data

    def transform_test(self, data: ImageDataset) -> ImageDataset:
        """What the attacker's model sees at test time (default: the clean test images)."""
        return data

    @classmethod
    def applies_to(cls, scheme: dict | None) -> bool:
        """Whether this attack can run against data published under `scheme` (the manifest's
        extra.key: family and settings; None without a key): a report lists an attack of the
        threat model that cannot apply as neither measured nor missing."""
        return True

    def check_context(self, context: AttackContext) -> None:
        for need in self.needs:
            if getattr(context, need) is None:
                hint = {"teacher": "the trained authorized network (a published dataset that names its key, "
                                   "and the key file)",
                        "aux": "an auxiliary clean set disjoint from the protected one (`aux`)",
                        "rho": "the published budget rho (the manifest's `rho`)",
                        "originals": "clean originals of some published images, with the same ids (`originals`)",
                        "scheme": "the published key scheme (the manifest's extra.key: family and public settings)",
                        }.get(need, need)
                raise LearnlockError(f"attack {self.name!r} needs {hint}")

    def train(self, published: ImageDataset, arch: str, seed: int, recipe: Recipe,
              context: AttackContext | None = None, progress: bool = True) -> nn.Module:
        context = context or AttackContext(progress=progress)
        self.check_context(context)
        return self.train_on(self.transform(published, context), arch, seed, recipe, context, progress)

    def train_on(self, data: ImageDataset, arch: str, seed: int, recipe: Recipe,
                 context: AttackContext, progress: bool = True, callbacks: Sequence[Callback] = ()) -> nn.Module:
        """Train on data `transform` already gave (the audit transforms once per attack and
        trains several nets and seeds on the result). `callbacks`: the caller's own (e.g. an
        EpochAccuracy on a dev split), after the attack's."""
        model = create_model(arch, data.num_classes, data.in_channels, seed=seed)
        return fit(model, data, replace(recipe, seed=seed), callbacks=self.callbacks(context) + list(callbacks),
                   loss=self.loss(context), progress=progress, desc=f"{self.name} {arch} seed {seed}")

    def evaluate(self, data: ImageDataset, test: ImageDataset, arch: str, seed: int, recipe: Recipe,
                 context: AttackContext, progress: bool = True, callbacks: Sequence[Callback] = ()) -> dict:
        """One audit cell: train on `data` (already transformed) and score on the clean test set as
        the attacker's model sees it; {"accuracy": ...} plus whatever else the attack measures."""
        model = self.train_on(data, arch, seed, recipe, context, progress, callbacks)
        return {"accuracy": evaluate(model, self.transform_test(test))}

    def assumptions(self, facts: dict) -> list[str]:
        """What this attacker holds, in words (for `learnlock report`), from the run's `facts`:
        "train_size" (published images), "aux_size" (clean aux images, None without), "rho"."""
        out = ["the published images and labels"]
        if "teacher" in self.needs:
            out.append(f"{facts.get('train_size', '?')} queries to the trained authorized network (the published "
                       "images)")
        if "aux" in self.needs:
            out.append(f"{facts.get('aux_size', '?')} clean auxiliary images")
        if "rho" in self.needs:
            out.append(f"the published budget rho = {facts.get('rho', '?')}")
        return out

    def manifest_settings(self) -> dict:
        return dataclasses.asdict(self.settings)

    def report(self) -> dict | None:
        """What the attack learned besides a model (a DDPM's losses, a key estimate), after transform."""
        return None

    def __getstate__(self) -> dict:
        """What travels to a worker process (an audit with `jobs`): the settings and what
        `transform` learned (public attributes); private attributes are this process's caches (a
        DDPM, an encoder) and arrive empty."""
        return {k: None if k.startswith("_") else v for k, v in self.__dict__.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


ATTACKS = Registry("attack", fixed=("settings",), kind=Attack)  # the rest are an attack's Settings' fields
