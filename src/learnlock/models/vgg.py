"""VGG-11 with BatchNorm (Simonyan & Zisserman, 2015, configuration "A"), CIFAR style.

Eight conv3x3-BN-ReLU layers with widths (w, 2w, 4w, 4w, 8w, 8w, 8w, 8w), w = `width`
(default 64), and five max pools, then global average pooling and one linear layer 8w ->
num_classes (9.2M parameters at the defaults). Pools use ceil_mode so a 28x28 input goes
28-14-7-4-2-1 instead of collapsing to 0x0; a 32x32 input goes 32-16-8-4-2-1 as usual.

    model = create_model("vgg11", num_classes=10, in_channels=1)
    model(torch.rand(8, 1, 28, 28)).shape   # (8, 10)
"""

from __future__ import annotations

from torch import nn

from ..errors import LearnlockError
from . import register_model

# Widths in units of w/64 ("M" is a 2x2 max pool).
_VGG11 = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"]


@register_model("vgg11")
def vgg11(num_classes: int, in_channels: int = 3, width: int = 64) -> nn.Module:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise LearnlockError(f"vgg11: width must be a positive integer, got {width!r}")
    layers, c_in = [], in_channels
    for v in _VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            c_out = v * width
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # BN supplies the bias
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)
    )
