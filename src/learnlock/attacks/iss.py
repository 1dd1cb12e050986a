"""Image shortcut squeezing (ISS; Liu, Zhao & Larson, ICML 2023): compress the published
training images before training, which removes the small high-frequency shortcuts most
unlearnable noises rely on.

- `iss-grayscale`: ITU-R 601 luminance 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels
  so the network is unchanged; applied to the test images too, as ISS does (no-op on 1 channel).
- `iss-jpeg`: JPEG at `quality` (default 10) via PIL, 4:2:0 chroma subsampling (PIL's default).
- `iss-bits`: bit-depth reduction to `bits` bits per channel (default 2): v -> round(v (2^b-1) / 255) * 255 / (2^b-1).

Uint8 in, uint8 out; shapes, labels and ids unchanged.

    model = create_attack("iss-jpeg", quality=10).train(published, "cnn", seed=0, recipe=RECIPES["cpu"])
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import register_attack
from .base import Attack, AttackSettings

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") and torchvision's Grayscale


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> uint8 N x 3 x H x W with every channel the rounded luminance."""
    if images.shape[1] == 1:
        return images.clone()
    w = torch.tensor(LUMA, dtype=torch.float32)[None, :, None, None]
    luma = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return luma.expand_as(images).contiguous()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each uint8 image as JPEG at `quality` with PIL and decode it again."""
    out = torch.empty_like(images)
    for i, img in enumerate(images):
        arr = img.permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
        out[i] = torch.from_numpy(back.reshape(arr.shape).copy()).permute(2, 0, 1)
    return out


def reduce_bits(images: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2 ** bits - 1
    q = torch.round(images.float() * levels / 255)
    return torch.round(q * 255 / levels).to(torch.uint8)


@dataclass(frozen=True)
class JpegSettings(AttackSettings):
    quality: int = 10  # JPEG quality, 1 (strongest compression) .. 95

    def check(self):
        self.require(1 <= self.quality <= 95,
                     f"quality must be an integer in [1, 95], got {self.quality!r}")


@dataclass(frozen=True)
class BitsSettings(AttackSettings):
    bits: int = 2  # bits kept per channel, 1..7

    def check(self):
        self.require(1 <= self.bits <= 7,
                     f"bits must be an integer in [1, 7], got {self.bits!r}")


class Squeeze(Attack):
    """A squeeze of the published images before training: `squeeze` maps uint8 images to uint8
    images and `what` names it in the dataset's source."""

    def squeeze(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def what(self) -> str:
        return self.name

    def transform(self, data, context):
        return data.with_images(self.squeeze(data.images), source=f"{data.source} [{self.what()}]")


@register_attack("iss-grayscale")
class IssGrayscale(Squeeze):
    presets = {"smoke": {}}  # the defaults already run in seconds

    calibration = ("uncalibrated", "restores EM at 8/255 for a fastnet hacker only to ratio 0.41-0.44 of clean data "
                   "under grayscale at the 10k tier (3 seeds; 0.31 for a converged cnn-surrogate EM, 1 seed), where "
                   "the published 50k runs reach about 1.0: a low ratio under it may be this tier's, not the "
                   "protection's")

    def squeeze(self, images):
        return grayscale(images)

    def what(self):
        return "grayscale"

    def transform_test(self, data):   # the network is trained on grey images, so it is tested on them
        return self.transform(data, None)


@register_attack("iss-jpeg")
class IssJpeg(Squeeze):
    Settings = JpegSettings
    presets = {"smoke": {}}  # the defaults already run in seconds

    calibration = ("calibrated", "at quality 10 restores EM at 8/255 to ratio 0.96-0.99 of clean data under JPEG-10 "
                   "at the 10k tier (published 78-82 % against 85 %)")

    def squeeze(self, images):
        return jpeg(images, self.settings.quality)

    def what(self):
        return f"jpeg q{self.settings.quality}"


@register_attack("iss-bits")
class IssBits(Squeeze):
    Settings = BitsSettings
    presets = {"smoke": {}}  # the defaults already run in seconds

    def squeeze(self, images):
        return reduce_bits(images, self.settings.bits)

    def what(self):
        return f"{self.settings.bits}-bit"
