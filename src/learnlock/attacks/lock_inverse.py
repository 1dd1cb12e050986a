"""`lock-inverse`: undo a class-wise per-pixel affine lock without the key, from statistics.

Threat model: the attacker knows the scheme of Learnability Lock (Peng & Chen, ICLR 2022): every
image of class y was published as x' = W_y * x + B_y, per pixel and channel, but not W and B.
Per class, that map sends the class's per-pixel mean mu_y and std s_y to W_y mu_y + B_y and
W_y s_y, so matching the published class's per-pixel statistics to reference statistics undoes it:

    x_hat = (x' - mean_pub_y) / std_pub_y * std_ref_y + mean_ref_y     (per pixel and channel)

  - with `--aux` (clean images of the same classes, disjoint from the published ones): the
    reference is the aux class's own mean and std; exact for the affine lock when the aux and
    published classes share their statistics (up to sampling noise, about std / sqrt(n) per pixel);
  - without aux: the reference is the pooled mean and std of all published images. The classes
    were locked with different maps, so the pooled statistic is the attacker's best guess at an
    unlocked one; this also removes the genuine differences between class means.

It assumes the affine variant (the residual lock is a nonlinear, image-dependent map: matching two
moments removes only its average effect) and needs at least two published items per class (other
classes are left as published). std_pub is floored at `min_std` so a nearly constant pixel is not
blown up. The attacker then trains from scratch on x_hat; test images are untouched (clean).

    model = create_attack("lock-inverse").train(published, "cnn", 0, RECIPES["cpu"], AttackContext(aux=aux))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import ImageDataset
from ..errors import LearnlockError
from . import register_attack
from .base import Attack, AttackContext, AttackSettings

REFERENCES = ("auto", "aux", "pooled")


@dataclass(frozen=True)
class LockInverseSettings(AttackSettings):
    reference: str = "auto"   # auto (aux when given, else pooled) | aux | pooled
    min_std: float = 1 / 255  # floor on the published per-pixel std, [0, 1] pixel units

    def check(self):
        self.require(self.reference in REFERENCES, f"reference must be one of {REFERENCES}, got {self.reference!r}")
        self.require(0 < self.min_std <= 1, f"min_std is in (0, 1] pixel units, got {self.min_std!r}")


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel-and-channel mean and (population) std over the items of x (N x C x H x W)."""
    return x.mean(0), x.std(0, unbiased=False)


def match_moments(data: ImageDataset, aux: ImageDataset | None, min_std: float) -> torch.Tensor:
    """uint8 images with each class's per-pixel mean and std moved onto the reference's."""
    x = data.float_images()
    ref = None if aux is None else aux.float_images()
    pooled = _moments(x)
    out = x.clone()
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) < 2:
            continue
        mean, std = _moments(x[idx])
        if ref is None:
            mean_ref, std_ref = pooled
        else:
            have = ref[aux.labels == c]
            if len(have) < 2:
                raise LearnlockError(f"lock-inverse: the aux set has {len(have)} image(s) of class "
                                     f"{data.classes[c]!r}; it needs at least 2 per class")
            mean_ref, std_ref = _moments(have)
        out[idx] = (x[idx] - mean) / std.clamp_min(min_std) * std_ref + mean_ref
    return torch.round(out.mul_(255).clamp_(0, 255)).to(torch.uint8)


@register_attack("lock-inverse")
class LockInverse(Attack):
    """Estimate and invert a class-wise per-pixel affine lock from image statistics (see the module docstring)."""

    Settings = LockInverseSettings
    presets = {"smoke": {}}  # the defaults already run in seconds
    aux_match = "classes"  # each class is matched to the aux class of the same name

    def uses_aux(self) -> bool:
        return self.settings.reference != "pooled"

    def assumptions(self, facts: dict) -> list[str]:
        aux = facts.get("aux_size") if self.settings.reference != "pooled" else None
        return ["the published images and labels", "the lock's scheme (class-wise per-pixel affine maps)",
                f"{aux} clean auxiliary images of the same classes" if aux else "no clean data (pooled statistics)"]

    def transform(self, data: ImageDataset, context: AttackContext) -> ImageDataset:
        s = self.settings
        use_aux = s.reference == "aux" or (s.reference == "auto" and context.aux is not None)
        if use_aux and context.aux is None:
            raise LearnlockError("lock-inverse with reference=aux needs an auxiliary clean set (`aux`)")
        aux = context.aux if use_aux else None
        if aux is not None:
            self.check_aux(aux, data)
        images = match_moments(data, aux, s.min_std)
        ref = "aux" if aux is not None else "pooled"
        return data.with_images(images, source=f"{data.source} [lock-inverse, {ref}]")
