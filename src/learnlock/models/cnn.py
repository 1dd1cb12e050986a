"""Plain ConvNet, the small baseline of the unlearnable-examples literature.

Three blocks of conv3x3-BN-ReLU-maxpool2 with widths (w, 2w, 4w), w = `width` (default 32),
then global average pooling and one linear layer: about 95k parameters at the defaults.

    model = create_model("cnn", num_classes=10, in_channels=1)
    model(torch.rand(8, 1, 28, 28)).shape   # (8, 10)
"""

from __future__ import annotations

from torch import nn

from ..errors import LearnlockError
from . import register_model


@register_model("cnn")
def cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise LearnlockError(f"cnn: width must be a positive integer, got {width!r}")
    layers, c_in = [], in_channels
    for c_out in (width, 2 * width, 4 * width):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # BN supplies the bias
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c_in = c_out
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)
    )
