"""Encoder: a frozen pretrained image backbone that maps images to unit-norm features.

The shared feature space of UGE (Ye & Wang, "Ungeneralizable Examples", CVPR 2024): an image
encoder E whose features are L2-normalised, plus one anchor per class in the same space. The
paper uses CLIP and the text embeddings of "a photo of a <class>" as anchors; an encoder
without a text tower uses the normalised class means of clean image features instead
(`class_anchors`, the documented substitute).

Every encoder takes float images in [0, 1], B x C x H x W with C = 1 (grey, repeated to 3
channels) or 3, resizes them to `resolution` x `resolution` (bilinear, antialias off, so the
resize is differentiable and cheap), applies the backbone's own input normalisation and returns
B x dim unit-norm features. Gradients flow to the input; the parameters are frozen and the
module stays in eval mode (BatchNorm statistics never change, whatever `.train()` is called).

    enc = create_encoder("efficientnet-lite0", resolution=64)
    feats = enc(torch.rand(8, 3, 32, 32))   # 8 x 1280, each row of norm 1

Subclasses set `default_resolution`, `mean`, `std` (per-channel input normalisation of the
backbone, RGB), `has_text`, build their backbone in `__init__`, set `self.dim`, call
`self._freeze()` and implement `embed` (and `encode_text` when `has_text`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LearnlockError

# Smallest accepted resolution (pixels): every backbone here downsamples by 32.
MIN_RESOLUTION = 16
# Prompt for text anchors, as in the UGE paper ("a photo of a <class>").
PROMPT = "a photo of a {}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Frozen image encoder with unit-norm outputs; see the module docstring.

    Args:
        resolution: side (pixels) images are resized to before the backbone. It dominates the
            cost (roughly quadratic); the feature dimension does not depend on it.
        device: where the backbone lives; inputs are moved there.
    """

    name: str = ""                         # registry name, set by register_encoder
    default_resolution: int = 224          # pixels
    has_text: bool = False                 # True when text_anchors works
    mean: tuple[float, float, float] = IMAGENET_MEAN   # RGB, applied after the [0,1] resize
    std: tuple[float, float, float] = IMAGENET_STD
    dim: int                               # feature dimension D

    def __init__(self, resolution: int | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        if resolution is None:
            resolution = self.default_resolution
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
            raise LearnlockError(
                f"resolution is the side in pixels images are resized to before the encoder; "
                f"it must be an integer >= {MIN_RESOLUTION}, got {resolution!r} "
                f"(default for {self.name or type(self).__name__}: {self.default_resolution})"
            )
        self.resolution = resolution
        try:
            self._target = torch.device(device)  # where _freeze puts it; afterwards it follows .to()
        except (RuntimeError, TypeError) as e:
            raise LearnlockError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from e
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    # -- subclass interface ------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x resolution x resolution, already normalised for the backbone -> B x dim
        features (not yet L2-normalised)."""
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """len(texts) x dim text features (not yet L2-normalised); only when has_text."""
        raise self._no_text()

    def _no_text(self) -> LearnlockError:
        return LearnlockError(
            f"encoder {self.name!r} has no text tower; use class_anchors(images, labels, num_classes) "
            "(normalised class means of clean image features) or an encoder with has_text=True"
        )

    def _freeze(self) -> None:
        """Subclasses call this at the end of __init__: no gradients to weights, eval mode, on device."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.to(self._target)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the encoder is now (its buffers' device), also after `.to(...)`: inputs follow it."""
        return self._mean.device

    # -- public API --------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Encoder":
        """Always eval: the encoder is frozen, so BatchNorm/dropout never switch to training."""
        return super().train(False)

    def settings(self) -> dict:
        """The resolved settings, to save beside results."""
        return {"encoder": self.name, "resolution": self.resolution, "dim": self.dim,
                "has_text": self.has_text}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], B x C x H x W (C = 1 or 3) -> B x dim unit-norm features.

        Differentiable w.r.t. x (no range check here: this is the hot path of UGE's inner loop).
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise LearnlockError(f"encoder input must be B x C x H x W with C = 1 or 3, got {shape}")
        if not x.is_floating_point():
            raise LearnlockError(f"encoder input must be float images in [0, 1], got dtype {x.dtype}; "
                                 "divide uint8 images by 255")
        x = x.to(device=self.device, dtype=self._mean.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=False)
        x = (x - self._mean) / self._std
        return F.normalize(self.embed(x), dim=1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """N x C x H x W images (float in [0, 1], or uint8) -> N x dim unit-norm features, in
        batches, without gradients."""
        images = _check_images(images)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LearnlockError(f"batch_size must be a positive integer, got {batch_size!r}")
        chunks = [self(_as_float(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim, device=self.device)

    @torch.no_grad()
    def class_anchors(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      batch_size: int = 256) -> torch.Tensor:
        """num_classes x dim: for each class k, normalise(mean of the unit-norm features of the
        clean images with label k). The substitute for text anchors when has_text is False.

        images: N x C x H x W, float in [0, 1] (uint8 is divided by 255); labels: N integers in
        [0, num_classes); every class needs at least one image.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise LearnlockError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        images = _check_images(images)
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point():
            raise LearnlockError(f"labels must be N integers for N = {len(images)} images, "
                                 f"got shape {tuple(labels.shape)} and dtype {labels.dtype}")
        labels = labels.long()
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise LearnlockError(f"labels must lie in [0, {num_classes}), got range "
                                 f"[{labels.min().item()}, {labels.max().item()}]")
        counts = torch.bincount(labels, minlength=num_classes)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise LearnlockError(f"class_anchors needs at least one image per class; classes {empty} have none")
        feats = self.encode(images, batch_size=batch_size)
        sums = torch.zeros(num_classes, self.dim, device=self.device).index_add_(0, labels.to(self.device), feats)
        return F.normalize(sums / counts.to(self.device, sums.dtype)[:, None], dim=1)

    @torch.no_grad()
    def text_anchors(self, class_names: Sequence[str], prompt: str = PROMPT) -> torch.Tensor:
        """len(class_names) x dim unit-norm text embeddings of prompt.format(name) (UGE's anchors).
        Raises LearnlockError when the encoder has no text tower."""
        if not self.has_text:
            raise self._no_text()
        names = _check_names(class_names)
        if "{}" not in prompt:
            raise LearnlockError(f"prompt must contain '{{}}' where the class name goes, got {prompt!r}")
        return F.normalize(self.encode_text([prompt.format(n) for n in names]), dim=1)

    def anchors(self, class_names: Sequence[str], images: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        """K x dim class anchors, K = len(class_names): text anchors when the encoder has a text
        tower (the paper's choice), otherwise normalised class means of the clean `images`."""
        names = _check_names(class_names)
        if self.has_text:
            return self.text_anchors(names)
        if images is None or labels is None:
            raise LearnlockError(f"encoder {self.name!r} has no text tower: anchors() needs the clean "
                                 "images and labels to compute class-mean anchors")
        return self.class_anchors(images, labels, len(names), batch_size=batch_size)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, resolution={self.resolution}, dim={self.dim}, has_text={self.has_text}"


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise LearnlockError(f"images must be an N x C x H x W tensor with C = 1 or 3, got {shape}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise LearnlockError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    return images


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


def _check_names(class_names) -> list[str]:
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names) or len(class_names) < 2:
        raise LearnlockError(f"class_names must be a sequence of at least two strings, got {class_names!r}")
    return list(class_names)
