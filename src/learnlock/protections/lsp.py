"""Linearly separable perturbations (Yu et al., "Availability Attacks Create Shortcuts", KDD 2022):
a synthetic shortcut that needs no model.

Norm L2 (see protections.base): every item's perturbation has L2 norm exactly
rho * sqrt(C * H * W) before quantisation (rho default 6/255, the paper's eps = 6). Each item
draws a point from its class's Gaussian cluster in a low-dimensional space of one value per
`patch` x `patch` block and channel (cluster centres on distinct hypercube vertices at
+-`class_sep`, unit spread, as sklearn's make_classification in the reference code); the point
is upsampled to blocks and scaled to the radius. Sample-wise noise whose classes are linearly
separable: a network learns the shortcut instead of the images.

    x_q = create_protection("lsp", rho=6 / 255, patch=8).apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.base import ImageDataset
from ..errors import LearnlockError
from .base import Protection, ProtectionSettings, register_protection


@dataclass(frozen=True)
class LSPSettings(ProtectionSettings):
    rho: float = 6 / 255       # root-mean-square change per value; L2 radius rho * sqrt(C*H*W)
    patch: int = 8             # block side in pixels
    class_sep: float = 10.0    # half side of the hypercube the class centres sit on

    def __post_init__(self):
        super().__post_init__()
        self.require(self.patch >= 1 and self.class_sep > 0,
                     f"patch must be >= 1 and class_sep > 0, got {self.patch}, {self.class_sep}")


def distinct_vertices(k: int, dim: int, gen: torch.Generator, patch: int) -> torch.Tensor:
    """k distinct corners of the {-1, 1}^dim hypercube, drawn uniformly."""
    if dim < 63 and k > 2 ** dim:
        raise LearnlockError(f"lsp: {k} classes need distinct cluster centres but blocks of {patch} pixels "
                             f"give only {dim} dimensions; use a smaller patch")
    if dim <= 20:  # few corners: draw without replacement
        codes = torch.randperm(2 ** dim, generator=gen)[:k]
        bits = (codes[:, None] >> torch.arange(dim)) & 1
    else:
        while True:  # 2^dim corners: a collision is (almost) impossible; redraw if it happens
            bits = torch.randint(0, 2, (k, dim), generator=gen)
            if torch.unique(bits, dim=0).shape[0] == k:
                break
    return bits.float().mul_(2).sub_(1)


@register_protection("lsp")
class LinearlySeparablePatches(Protection):
    """Linearly separable synthetic perturbations (Yu et al. 2022); see the module docstring."""

    Settings = LSPSettings
    presets = {"smoke": {}}  # the defaults already take milliseconds
    norm = "l2"

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        g = torch.Generator().manual_seed(s.seed)
        c, h, w = data.images.shape[1:]
        coarse = (c, -(-h // s.patch), -(-w // s.patch))
        dim = coarse[0] * coarse[1] * coarse[2]
        centres = distinct_vertices(data.num_classes, dim, g, s.patch)
        points = centres[data.labels] * s.class_sep + torch.randn((len(data), dim), generator=g)
        delta = points.view(len(data), *coarse)
        delta = delta.repeat_interleave(s.patch, 2).repeat_interleave(s.patch, 3)[:, :, :h, :w]
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return data.float_images() + delta * (self.l2_radius((c, h, w)) / norms)
