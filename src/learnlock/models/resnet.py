"""ResNets with the CIFAR stem (He et al., 2016, "Deep Residual Learning for Image Recognition").

The stem is one conv3x3 with stride 1 and no max pooling, so 32x32 inputs keep full resolution
in the first stage; each later stage halves H and W and doubles the width. Global average
pooling and one linear layer follow.

- "resnet18": BasicBlocks [2, 2, 2, 2], widths (w, 2w, 4w, 8w), w = `width` (default 64):
  11.2M parameters, the usual CIFAR ResNet-18.
- "resnet8": BasicBlocks [1, 1, 1], widths (w, 2w, 4w), w = `width` (default 32): about 0.3M
  parameters, a light residual net for CPU runs.

    model = create_model("resnet18", num_classes=10)
    model(torch.rand(8, 3, 32, 32)).shape   # (8, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LearnlockError
from . import register_model


class BasicBlock(nn.Module):
    """Two conv3x3-BN layers plus the identity (or a strided 1x1 conv-BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride)]
            stage += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def _check_width(arch: str, width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise LearnlockError(f"{arch}: width must be a positive integer, got {width!r}")


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> nn.Module:
    _check_width("resnet18", width)
    return ResNet([2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], num_classes, in_channels)


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    _check_width("resnet8", width)
    return ResNet([1, 1, 1], [width, 2 * width, 4 * width], num_classes, in_channels)
