"""Uniform random noise: the simplest protection, and the usual control in the
unlearnable-examples literature (Huang et al., "Unlearnable Examples", ICLR 2021, Table 1).

Norm L-inf: delta ~ U[-rho, rho] per pixel (rho in [0, 1] pixel units, default 8/255), one
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


@register_protection("random")
class RandomNoise(Protection):
    """Uniform L-inf noise in [-rho, rho], sample-wise or class-wise."""

    Settings = RandomNoiseSettings

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        g = torch.Generator().manual_seed(s.seed)
        if s.classwise:
            patterns = torch.rand((data.num_classes,) + tuple(data.images.shape[1:]), generator=g)
            delta = patterns[data.labels]
        else:
            delta = torch.rand(tuple(data.images.shape), generator=g)
        return data.float_images() + delta.mul_(2).sub_(1).mul_(s.rho)
