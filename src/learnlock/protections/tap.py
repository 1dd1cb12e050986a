"""Targeted adversarial poisoning (Fowl et al., "Adversarial Examples Make Strong Poisons",
NeurIPS 2021).

Norm L-inf, rho (default 8/255) in [0, 1] pixel units. A surrogate (default resnet18) is trained
on the clean data with a named recipe; then every image gets a targeted PGD perturbation toward
a fixed permutation of its class, t = (y + 1) mod K:
    delta = argmin_{|delta|_inf <= rho} CE(f(x + delta), t)
with `steps` signed-gradient steps of `step_size` from zero, pixels kept in [0, 1]. A network
trained on the result learns the adversarial (non-robust) features of the wrong class. The
surrogate is cached in the work folder. Difference from the paper: no differentiable
augmentation and no ensemble in the PGD step.

    x_q = create_protection("tap", surrogate="cnn", steps=100).apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.base import ImageDataset
from ..device import current_device
from ..errors import LearnlockError
from ..models import NetSpec, list_models
from ..recipe import RECIPES, get_recipe
from .base import Protection, ProtectionSettings, register_protection
from .surrogate import model_from, train_cached


@dataclass(frozen=True)
class TAPSettings(ProtectionSettings):
    surrogate: str = "resnet18"    # surrogate architecture, trained on the clean data
    recipe: str = "ue-gpu"         # its training recipe (`learnlock list`)
    steps: int = 250               # PGD steps (the paper's 250)
    step_size: float = 0.5 / 255   # per step, [0, 1] pixel units
    shift: int = 1                 # target class t = (y + shift) mod K
    batch_size: int = 256

    def __post_init__(self):
        super().__post_init__()
        self.require(self.surrogate in list_models(),
                     f"unknown surrogate {self.surrogate!r}; choose one of {list_models()}")
        self.require(self.recipe in RECIPES, f"unknown recipe {self.recipe!r}; choose one of {list(RECIPES)}")
        self.require(self.steps >= 1, "steps must be >= 1")
        self.require(0 < self.step_size <= 1, f"step_size is in (0, 1] pixel units, got {self.step_size}")
        self.require(self.shift >= 1, "shift must be >= 1 (0 would target the true class)")
        self.require(self.batch_size >= 1, "batch_size must be >= 1")


@register_protection("tap")
class TargetedAdversarialPoisoning(Protection):
    """Targeted adversarial poisoning (Fowl et al. 2021); see the module docstring."""

    Settings = TAPSettings
    presets = {"smoke": dict(surrogate="cnn", recipe="cpu", steps=5, step_size=2 / 255)}

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        if s.shift % data.num_classes == 0:
            raise LearnlockError(f"tap: shift {s.shift} is a multiple of {data.num_classes} classes; "
                                 "the target would be the true class")
        recipe = get_recipe(s.recipe, seed=s.seed)
        spec = NetSpec.create(s.surrogate, data.num_classes, data.in_channels, seed=s.seed)
        _, states = train_cached(workdir, f"tap_surrogate_{s.surrogate}", spec, data, recipe,
                                 progress=self.progress)
        dev = current_device()
        model = model_from(spec, states[-1]).to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        x_all = data.float_images()
        target = (data.labels + s.shift) % data.num_classes
        out = torch.empty_like(x_all)
        batches = list(torch.arange(len(data)).split(s.batch_size))
        for b in tqdm(batches, desc="tap (PGD)", disable=not self.progress, leave=False):
            x, t = x_all[b].to(dev), target[b].to(dev)
            adv = x.clone()
            for _ in range(s.steps):
                adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), t), adv)
                adv = adv.detach() - s.step_size * grad.sign()
                adv = torch.min(torch.max(adv, x - s.rho), x + s.rho).clamp_(0, 1)
            out[b] = adv.cpu()
        return out
