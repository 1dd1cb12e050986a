"""Autoregressive perturbations (Sandoval-Segura et al., "Autoregressive Perturbations for Data
Poisoning", NeurIPS 2022): a synthetic shortcut that needs no model.

Norm L2 (see protections.base): every item's perturbation is scaled to L2 norm
rho * sqrt(C * H * W) (default rho 0.018 = the paper's L2 eps 1.0 on 32 x 32 RGB). Each class
has its own AR process per channel over a causal 3 x 3 window,
    p[i, j] = sum_k a_k p[i - di_k, j - dj_k] + e[i, j],   e ~ N(0, 1),
with 8 coefficients a drawn per class and channel and scaled to sum |a| = `stability` < 1
(a stable process). Every item runs its class's process from its own Gaussian start and noise;
two burn-in rows and columns are cropped. The class's AR filter (1, -a) turns its items'
perturbations back into white noise, a feature one convolution finds at once.

    x_q = create_protection("ar").apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.base import ImageDataset
from .base import Protection, ProtectionSettings, register_protection

WINDOW = [(di, dj) for di in range(3) for dj in range(3) if (di, dj) != (0, 0)]  # causal 3 x 3
BURN_IN = 2


def ar_coefficients(num_classes: int, channels: int, stability: float, gen: torch.Generator) -> torch.Tensor:
    """K x C x 8 coefficients with sum |a| = stability per class and channel."""
    a = torch.randn((num_classes, channels, len(WINDOW)), generator=gen)
    return a * (stability / a.abs().sum(-1, keepdim=True))


def ar_generate(coef: torch.Tensor, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Run one AR process per row of `coef` (N x C x 8): N x C x h x w, burn-in cropped."""
    n, c, _ = coef.shape
    H, W = h + BURN_IN, w + BURN_IN
    p = torch.randn((n, c, H, W), generator=gen)  # start values; the rest is overwritten below
    e = torch.randn((n, c, H, W), generator=gen)
    for i in range(BURN_IN, H):
        for j in range(BURN_IN, W):
            past = torch.stack([p[:, :, i - di, j - dj] for di, dj in WINDOW], -1)
            p[:, :, i, j] = (past * coef).sum(-1) + e[:, :, i, j]
    return p[:, :, BURN_IN:, BURN_IN:]


@dataclass(frozen=True)
class ARSettings(ProtectionSettings):
    rho: float = 0.018          # root-mean-square change per value; L2 radius rho * sqrt(C*H*W)
    stability: float = 0.95     # sum |a| of each process, < 1

    def __post_init__(self):
        super().__post_init__()
        self.require(0 < self.stability < 1, f"stability must be in (0, 1) for a stable process, got {self.stability}")


@register_protection("ar")
class Autoregressive(Protection):
    """Autoregressive perturbations (Sandoval-Segura et al. 2022); see the module docstring."""

    Settings = ARSettings
    norm = "l2"

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        g = torch.Generator().manual_seed(s.seed)
        c, h, w = data.images.shape[1:]
        coef = ar_coefficients(data.num_classes, c, s.stability, g)
        delta = ar_generate(coef[data.labels], h, w, g)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return data.float_images() + delta * (self.l2_radius((c, h, w)) / norms)
