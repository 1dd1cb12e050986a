"""Augmentation countermeasures: `cutout` (DeVries & Taylor 2017), `mixup` (Zhang et al. 2018),
`cutmix` (Yun et al. 2019), applied per batch on top of the recipe's crop + flip.

Each is a training-time batch transform (a callback of the one loop). Mixup and cutmix return
soft labels (N x C class probabilities), which the default cross-entropy loss takes as they are.
Draws come from a private generator seeded by the recipe's seed, so runs are reproducible.

    model = create_attack("cutmix", alpha=1.0).train(published, "resnet18", seed=0, recipe=RECIPES["cpu"])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..training import Callback
from . import register_attack
from .base import Attack, AttackSettings

SEED_OFFSET = 7919  # keeps these draws apart from the loop's own data-order generator


def box_mask(h: int, w: int, side_h: int, side_w: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n x 1 x h x w boolean masks, True inside one box per item whose centre is uniform over the
    image and which is clipped at the borders (as cutout and cutmix both do)."""
    cy = torch.from_numpy(rng.integers(0, h, n))
    cx = torch.from_numpy(rng.integers(0, w, n))
    y0, y1 = (cy - side_h // 2).clamp(0, h), (cy - side_h // 2 + side_h).clamp(0, h)
    x0, x1 = (cx - side_w // 2).clamp(0, w), (cx - side_w // 2 + side_w).clamp(0, w)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    return inside[:, None]


@dataclass(frozen=True)
class AugmentSettings(AttackSettings):
    kind: str = "cutmix"   # cutout | mixup | cutmix
    size: float = 0.5      # cutout: box side as a fraction of the image side (16 px on 32 px)
    alpha: float = 1.0     # mixup / cutmix: mixing weight lam ~ Beta(alpha, alpha)
    prob: float = 1.0      # share of batches transformed

    def check(self):
        self.require(self.kind in ("cutout", "mixup", "cutmix"),
                     f"kind must be cutout, mixup or cutmix, got {self.kind!r}")
        self.require(0 < self.size <= 1, f"size is a fraction of the image side in (0, 1], got {self.size}")
        self.require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        self.require(0 <= self.prob <= 1, f"prob must be in [0, 1], got {self.prob}")


class MixCallback(Callback):
    def __init__(self, settings: AugmentSettings):
        self.s = settings

    def on_fit_start(self, model, recipe):
        # numpy's Generator has Beta; torch's distributions would use the global RNG
        self.rng = np.random.default_rng(recipe.seed + SEED_OFFSET)
        self.num_classes = None

    def on_batch(self, model, x, y, step):
        s, rng = self.s, self.rng
        if rng.random() >= s.prob:
            return x, y
        n, _, h, w = x.shape
        if s.kind == "cutout":
            mask = box_mask(h, w, max(1, round(s.size * h)), max(1, round(s.size * w)), n, rng)
            return x.masked_fill(mask.to(x.device), 0.0), y
        lam = float(rng.beta(s.alpha, s.alpha))
        perm = torch.from_numpy(rng.permutation(n)).to(x.device)
        if y.dim() == 1:
            if self.num_classes is None:
                with torch.no_grad():
                    self.num_classes = model.eval()(x[:2]).shape[1]
            y = F.one_hot(y, self.num_classes).float()
        if s.kind == "mixup":
            return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
        # cutmix: one box of area ~(1 - lam) for the batch, pasted from the permuted batch; the
        # label weight is the box's actual area after clipping at the border.
        side = (1 - lam) ** 0.5
        mask = box_mask(h, w, round(side * h), round(side * w), 1, rng)
        area = mask.float().mean().item()  # on the host mask: no device sync
        mask = mask.to(x.device)
        return torch.where(mask, x[perm], x), (1 - area) * y + area * y[perm]


class Augment(Attack):
    Settings = AugmentSettings
    kind = "cutmix"  # what the registered subclass does by default

    def __init__(self, settings=None, **overrides):
        super().__init__(settings or AugmentSettings(kind=self.kind), **overrides)

    def callbacks(self, context):
        return [MixCallback(self.settings)]


@register_attack("cutout")
class Cutout(Augment):
    presets = {"smoke": {}}  # the defaults already run in seconds
    kind = "cutout"


@register_attack("mixup")
class Mixup(Augment):
    presets = {"smoke": {}}  # the defaults already run in seconds
    kind = "mixup"


@register_attack("cutmix")
class CutMix(Augment):
    presets = {"smoke": {}}  # the defaults already run in seconds
    kind = "cutmix"
