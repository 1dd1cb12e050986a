"""Uniform random noise: the simplest protection, and the usual control in the
unlearnable-examples literature (Huang et al., "Unlearnable Examples", ICLR 2021, Table 1).

Norm L-inf: delta ~ U[-rho, rho] per pixel (or per `patch` x `patch` block) (rho in [0, 1] pixel units, default 8/255), one
pattern per item, or one per class with `classwise=True`; seeded by `settings.seed`.
Input and output N x C x H x W; the base class projects and quantizes to uint8.

    prot = RandomNoise(rho=8 / 255, classwise=True, seed=0)
    x_q = prot.apply(load_dataset("cifar10", per_class=100))   # uint8, same shape
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.base import ImageDataset
from .base import Protection, ProtectionSettings, register_protection


@dataclass(frozen=True)
class RandomNoiseSettings(ProtectionSettings):
    classwise: bool = False  # True: one noise pattern per class, shared by all its items
    patch: int = 1           # side in pixels of the constant blocks the noise is drawn in (1 = per
                             # pixel; 8 = blocky noise, like linearly separable patches, which random
                             # crops and flips do not wash out)

    def __post_init__(self):
        super().__post_init__()
        self.require(self.patch >= 1, f"patch is a block side in pixels, >= 1; got {self.patch}")


@register_protection("random")
class RandomNoise(Protection):
    """Uniform L-inf noise in [-rho, rho], sample-wise or class-wise."""

    Settings = RandomNoiseSettings
    presets = {"smoke": {}}  # the defaults already take milliseconds

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        g = torch.Generator().manual_seed(s.seed)
        c, h, w = data.images.shape[1:]
        coarse = (c, -(-h // s.patch), -(-w // s.patch))  # ceil: blocks cover the image
        n = data.num_classes if s.classwise else len(data)
        delta = torch.rand((n,) + coarse, generator=g)
        if s.patch > 1:
            delta = delta.repeat_interleave(s.patch, 2).repeat_interleave(s.patch, 3)[:, :, :h, :w]
        if s.classwise:
            delta = delta[data.labels]
        return data.float_images() + delta.mul_(2).sub_(1).mul_(s.rho)
