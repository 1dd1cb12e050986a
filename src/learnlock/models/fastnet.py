"""`fastnet`: an airbench94-class network (Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024), the
evaluator learnlock trains hackers with at the 10k tier. Written from the published description,
not copied.

A 2x2 convolution stem (24 channels, bias, GELU), then three groups of
conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU with widths `widths` (default half of
airbench94's 64/256/256: 32/128/128, which trains as well at 10,000 images and twice as fast on a
CPU), a global max-pool and a linear head whose logits are scaled by 1/9 as airbench does (it keeps
the first steps at lr 0.2 stable).

No whitening stem: airbench fits its first layer to the patch covariance of the training images
and freezes it. Fitted on published data that step is itself a second-order estimator of where the
noise lives (a partial key estimate handed to every hacker), so learnlock leaves it out and trains
the stem like any other layer.

    model = create_model("fastnet", num_classes=10, in_channels=3, seed=0)
    model(torch.rand(8, 3, 32, 32)).shape   # (8, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LearnlockError
from . import register_model


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def group(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]


@register_model("fastnet")
def fastnet(num_classes: int, in_channels: int = 3, widths: tuple = (32, 128, 128), stem: int = 24) -> nn.Module:
    widths = tuple(widths)
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise LearnlockError(f"fastnet: widths must be three positive integers, got {widths!r}")
    if isinstance(stem, bool) or not isinstance(stem, int) or stem < 1:
        raise LearnlockError(f"fastnet: stem must be a positive integer, got {stem!r}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 2, bias=True), nn.GELU()]
    c_in = stem
    for w in widths:
        layers += group(c_in, w)
        c_in = w
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes, bias=False),
                         Scale(1 / 9))
