"""LeNet-5 (LeCun et al., 1998), with ReLU and max pooling as it is usually trained today.

conv5x5(6, padding 2) -> pool -> conv5x5(16) -> pool -> fc120 -> fc84 -> fc(num_classes).
The padding and an AdaptiveAvgPool2d(5) before the first fc layer make 28x28 and 32x32 inputs
both give the original 16x5x5 features. About 62k parameters for 3x32x32 and 10 classes.

    model = create_model("lenet", num_classes=10, in_channels=1)
    model(torch.rand(8, 1, 28, 28)).shape   # (8, 10)
"""

from __future__ import annotations

from torch import nn

from . import register_model


@register_model("lenet")
def lenet(num_classes: int, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(5),  # 28px input gives 5x5 here already, 32px gives 6x6
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )
