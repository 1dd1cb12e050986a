"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"),
CIFAR variant.

Stem conv3x3(32) with stride 1, then inverted-residual stages (expansion t, width c, repeats n,
stride s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1):
the ImageNet config with the stem and second-stage strides set to 1 for 32px inputs, as in the
common pytorch-cifar variant. Then conv1x1(1280), global average pooling and a linear layer.
`width_mult` (default 1.0) scales every width (rounded to a multiple of 8); the last width is
scaled only when width_mult > 1, as in the paper. 2.2M parameters at the defaults.

    model = create_model("mobilenetv2", num_classes=10, width_mult=0.5)
    model(torch.rand(8, 3, 32, 32)).shape   # (8, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LearnlockError
from . import register_model

# (expansion t, output width c, repeats n, stride of the first repeat s)
_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _round8(c: float) -> int:
    """Nearest multiple of 8, never below 8 nor more than 10% below c (the paper's rounding)."""
    r = max(8, int(c + 4) // 8 * 8)
    return r + 8 if r < 0.9 * c else r


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU6(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; identity added when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        layers = _conv_bn(c_in, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, c_out, 1, relu=False)  # linear bottleneck: no ReLU
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    ok = isinstance(width_mult, (int, float)) and not isinstance(width_mult, bool)
    if not (ok and width_mult > 0):
        raise LearnlockError(f"mobilenetv2: width_mult must be > 0, got {width_mult!r}")
    c_in = _round8(32 * width_mult)
    layers = _conv_bn(in_channels, c_in, 3)  # stride 1: keep 32x32 resolution
    for t, c, n, s in _CONFIG:
        c_out = _round8(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
            c_in = c_out
    c_last = _round8(1280 * max(1.0, width_mult))
    layers += _conv_bn(c_in, c_last, 1)
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_last, num_classes)
    )
