"""CLIP through open_clip: image features and text anchors, as in the UGE paper.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
2021; implementation: open_clip (PyPI `open-clip-torch`, MIT). UGE (Ye & Wang, CVPR 2024) uses
the CLIP image encoder as the shared feature space and the text embeddings of
"a photo of a <class>" as class anchors; `anchors()` therefore returns text anchors here.

Settings: `model` (an open_clip architecture, default "ViT-B-32"), `pretrained` (a local
weights file, or an open_clip tag such as "openai" that is resolved through the Hugging Face
hub cache; None builds random weights, for tests only), `cache_dir` (hub cache). Default
resolution 224 (ViT-B-32's native size; another resolution interpolates the position
embeddings). Input normalisation: the model's own (for OpenAI CLIP mean 0.48145466, 0.4578275,
0.40821073 and std 0.26862954, 0.26130258, 0.27577711).

    enc = create_encoder("clip", pretrained="/data/clip/ViT-B-32-openai.bin")
    anchors = enc.text_anchors(["airplane", "automobile"])   # 2 x 512

Requirements, checked when the encoder is built (`import learnlock.encoders` never needs
them): `import open_clip` imports torchvision unconditionally (open_clip/transform.py and
utils.py), so it needs a torchvision build that matches the installed torch. For a CPU torch
install torchvision from the PyTorch CPU index first (`pip install torchvision --index-url
https://download.pytorch.org/whl/cpu`), then `pip install open-clip-torch`; a plain
`pip install open-clip-torch` on a CPU-only torch pulls the newest CUDA torch from PyPI.
"""

from __future__ import annotations

import logging
import os

import torch

from ..errors import LearnlockError
from . import register_encoder
from .base import Encoder

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INSTALL = ("install torchvision built for your torch first (CPU: pip install torchvision "
           "--index-url https://download.pytorch.org/whl/cpu), then: pip install open-clip-torch")


def import_open_clip():
    """The open_clip module, or LearnlockError saying why it cannot be imported and how to fix it."""
    try:
        import open_clip
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        raise LearnlockError(
            f"encoder 'clip' needs open_clip (PyPI open-clip-torch), whose import also imports "
            f"torchvision; `import open_clip` failed with {type(e).__name__}: {e}. To use it, {INSTALL}. "
            f"Without it use the default encoder 'efficientnet-lite0'."
        ) from e
    return open_clip


@register_encoder("clip")
class ClipEncoder(Encoder):
    """open_clip CLIP image tower (features) and text tower (anchors); see the module docstring."""

    default_resolution = 224
    has_text = True
    mean = CLIP_MEAN
    std = CLIP_STD

    def __init__(self, resolution: int | None = None, device: str | torch.device = "cpu",
                 model: str = "ViT-B-32", pretrained: str | os.PathLike | None = "openai",
                 cache_dir: str | None = None):
        super().__init__(resolution, device)
        open_clip = import_open_clip()
        if model not in open_clip.list_models():
            raise LearnlockError(f"unknown open_clip model {model!r}; choose one of: "
                                 f"{', '.join(open_clip.list_models())}")
        config = open_clip.get_model_config(model)
        native = config["vision_cfg"].get("image_size", self.default_resolution)
        kw = {} if self.resolution == native else {"force_image_size": self.resolution}
        self.model_name = model
        self.pretrained = None if pretrained is None else str(pretrained)
        self.net = self._build(open_clip, model, self.pretrained, cache_dir, kw)
        self.tokenizer = open_clip.get_tokenizer(model)
        pre = open_clip.get_model_preprocess_cfg(self.net) if hasattr(open_clip, "get_model_preprocess_cfg") else {}
        self.mean = tuple(pre.get("mean", CLIP_MEAN))
        self.std = tuple(pre.get("std", CLIP_STD))
        self._mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std).view(1, 3, 1, 1)
        self.dim = int(config["embed_dim"])
        self._freeze()

    def _build(self, open_clip, model: str, pretrained: str | None, cache_dir, kw) -> torch.nn.Module:
        if pretrained is None:
            log.warning("clip encoder %s built with RANDOM weights (pretrained=None): its features and text "
                        "anchors are meaningless; use this only in tests", model)
            return open_clip.create_model(model, pretrained=None, device=self._target, **kw)
        tags = open_clip.list_pretrained_tags_by_model(model)
        if os.path.isfile(pretrained):
            try:
                return open_clip.create_model(model, pretrained=pretrained, device=self._target, **kw)
            except (RuntimeError, OSError, KeyError, ValueError) as e:
                raise LearnlockError(f"cannot load CLIP weights for {model} from {pretrained}: {e}") from e
        if pretrained not in tags:
            raise LearnlockError(f"pretrained={pretrained!r} is neither a file nor an open_clip tag of {model}; "
                                 f"pass a local weights file or one of: {', '.join(tags) or '(no tags)'}")
        try:
            return open_clip.create_model(model, pretrained=pretrained, device=self._target,
                                          cache_dir=cache_dir, **kw)
        except Exception as e:  # hub / network / cache errors of several libraries, reported with cause
            raise LearnlockError(
                f"no CLIP weights reachable for {model} pretrained={pretrained!r}: open_clip could neither "
                f"download them nor find them in the hub cache ({type(e).__name__}: {e}). Offline, no CLIP "
                f"weights can be fetched: download the checkpoint on a machine with internet and pass its "
                f"path as pretrained=/path/to/weights (.bin/.pt/.safetensors), or use 'efficientnet-lite0'."
            ) from e

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode_image(x)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.net.encode_text(tokens)

    def settings(self) -> dict:
        return {**super().settings(), "model": self.model_name, "pretrained": self.pretrained}
