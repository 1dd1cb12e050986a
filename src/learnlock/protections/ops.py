"""One-pixel shortcut (Wu et al., "One-Pixel Shortcut: on the Learning Preference of Deep Neural
Networks", ICLR 2023): a synthetic shortcut that needs no model.

Norm L0: exactly one pixel per image changes, by any amount (rho does not apply). For each class
the pixel position and the colour (a corner of the RGB cube, or black / white) are chosen to
maximise the mean change of that pixel over the class's images divided by its variance (large
and consistent), then that pixel is set to that colour in every image of the class.

    x_q = create_protection("ops").apply(data)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.base import ImageDataset
from .base import Protection, ProtectionSettings, register_protection


@dataclass(frozen=True)
class OPSSettings(ProtectionSettings):
    rho: float = 1.0            # unused: OPS is bounded in L0 (one pixel), not L-inf
    pixels: int = 1             # pixels changed per image (the method is defined for one)

    def __post_init__(self):
        super().__post_init__()
        self.require(self.pixels == 1, f"ops changes exactly one pixel per image; pixels must be 1, got {self.pixels}")


def search_pixel(x: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """(row, col, colour) maximising mean / variance of the change over images `x` (n x C x H x W)."""
    c = x.shape[1]
    colours = torch.tensor(list(itertools.product((0.0, 1.0), repeat=c)))  # 2^C x C
    change = (x[:, None] - colours[None, :, :, None, None]).abs().sum(2)    # n x 2^C x H x W
    score = change.mean(0) / (change.var(0, unbiased=False) + 1e-6)
    best = int(score.flatten().argmax())
    k, rest = divmod(best, x.shape[2] * x.shape[3])
    i, j = divmod(rest, x.shape[3])
    return i, j, colours[k]


@register_protection("ops")
class OnePixelShortcut(Protection):
    """One-pixel shortcut (Wu et al. 2023); see the module docstring. Deterministic: the seed
    only chooses the protected items when fraction < 1."""

    Settings = OPSSettings
    presets = {"smoke": {}}  # the defaults already take milliseconds
    norm = "l0"

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        x = data.float_images()
        out = x.clone()
        self.pixels_chosen = {}
        for k in range(data.num_classes):
            idx = (data.labels == k).nonzero().flatten()
            if len(idx) == 0:
                continue
            i, j, colour = search_pixel(x[idx])
            out[idx, :, i, j] = colour
            self.pixels_chosen[data.classes[k]] = {"row": i, "col": j, "colour": colour.tolist()}
        return out

    def manifest_extra(self) -> dict:
        return {"pixels_chosen": getattr(self, "pixels_chosen", {})}
