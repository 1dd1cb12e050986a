"""ShuffleNetV2 (Ma et al., 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design"), CIFAR variant.

Stem conv3x3(24) with stride 1 and no max pooling, then three stages of (1 downsampling unit +
3/7/3 basic units), conv1x1, global average pooling and a linear layer. A basic unit splits the
channels in half, transforms one half (1x1 -> depthwise 3x3 -> 1x1) and shuffles the two halves
together; a downsampling unit runs both halves at stride 2 and doubles the width. `net_size`
picks the paper's widths: 0.5 (default, 48-96-192, conv 1024; 0.35M parameters), 1, 1.5, 2.

    model = create_model("shufflenetv2", num_classes=10, net_size=1)
    model(torch.rand(8, 3, 32, 32)).shape   # (8, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LearnlockError
from . import register_model

# net_size -> (stage widths, final conv width), from Table 5 of the paper.
_WIDTHS = {0.5: ((48, 96, 192), 1024), 1: ((116, 232, 464), 1024),
           1.5: ((176, 352, 704), 1024), 2: ((244, 488, 976), 2048)}
_REPEATS = (3, 7, 3)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def _shuffle(x: torch.Tensor) -> torch.Tensor:
    """Interleave the two halves of the channels so the next split mixes both branches."""
    b, c, h, w = x.shape
    return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Basic unit (stride 1, c_in == c_out) or downsampling unit (stride 2)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        half = c_out // 2
        branch_in = c_in if stride == 2 else c_in // 2
        self.right = nn.Sequential(
            *_conv_bn(branch_in, half, 1),
            *_conv_bn(half, half, 3, stride, groups=half, relu=False),
            *_conv_bn(half, half, 1),
        )
        # The downsampling unit also transforms the untouched half, at stride 2.
        self.left = nn.Sequential(
            *_conv_bn(c_in, c_in, 3, 2, groups=c_in, relu=False),
            *_conv_bn(c_in, half, 1),
        ) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left is None:
            keep, x = x.chunk(2, dim=1)
            return _shuffle(torch.cat([keep, self.right(x)], 1))
        return _shuffle(torch.cat([self.left(x), self.right(x)], 1))


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int, in_channels: int = 3, net_size: float = 0.5) -> nn.Module:
    if net_size not in _WIDTHS:
        raise LearnlockError(
            f"shufflenetv2: net_size must be one of {sorted(_WIDTHS)}, got {net_size!r}"
        )
    widths, c_last = _WIDTHS[net_size]
    c_in = 24
    layers = _conv_bn(in_channels, c_in, 3)  # stride 1, no max pool: keep 32x32 resolution
    for c_out, n in zip(widths, _REPEATS):
        layers.append(ShuffleUnit(c_in, c_out, 2))
        layers += [ShuffleUnit(c_out, c_out, 1) for _ in range(n)]
        c_in = c_out
    layers += _conv_bn(c_in, c_last, 1)
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_last, num_classes)
    )
