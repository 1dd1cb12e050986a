"""Robust error-minimizing noise (Fu et al., "Robust Unlearnable Examples", ICLR 2022).

Norm L-inf, rho (default 8/255) in [0, 1] pixel units. Min-min-max:
    min_delta min_theta E max_{|a|_inf <= adv_radius} CE(f_theta(x + delta + a), y)
so the noise survives adversarial training up to `adv_radius` (default 4/255, < rho). Each round
trains the surrogate adversarially (PGD, `adv_steps` steps of `adv_step_size`, random start) on
x + delta, then descends delta on the loss at the PGD point of x + delta (Danskin: the inner
maximiser is held fixed for the gradient). Same engine, resume and settings as `em`; REM has no
stop criterion in the paper (stop_error 0: runs `max_rounds`). Difference from the reference:
no expectation over augmentations in the noise step.

    x_q = create_protection("rem", surrogate="cnn", max_rounds=20).apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..losses import generator_on
from ..pgd import PGD, PGDCallback
from .base import register_protection
from .em import EMSettings, MinMin


@dataclass(frozen=True)
class REMSettings(EMSettings):
    noise_steps: int | None = 10   # signed-gradient steps on delta per batch per round
    step_size: float = 1.6 / 255   # [0, 1] pixel units
    stop_error: float | None = 0.0  # 0: no early stop, as in the paper
    max_rounds: int = 50
    adv_radius: float = 4 / 255    # L-inf radius of the adversary the noise must survive
    adv_steps: int = 10            # PGD steps of that adversary
    adv_step_size: float = 0.8 / 255

    def __post_init__(self):
        super().__post_init__()
        self.require(0 <= self.adv_radius <= 1 and self.adv_steps >= 1 and 0 < self.adv_step_size <= 1,
                     "adv_radius must be in [0, 1] pixel units, adv_steps >= 1, adv_step_size in (0, 1]")

    def pgd(self) -> PGD:
        return PGD(eps=max(self.adv_radius, 1e-12), step=self.adv_step_size, steps=self.adv_steps)


@register_protection("rem")
class RobustErrorMinimizing(MinMin):
    """Robust error-minimizing noise (Fu et al. 2022); see the module docstring."""

    Settings = REMSettings
    presets = {"smoke": dict(surrogate="cnn", max_rounds=2, noise_steps=2, train_steps=2, batch_size=8, adv_steps=2)}

    def reset(self):
        self._gen = None  # PGD random starts, drawn on the run's device (made at first use)

    def train_callbacks(self, model):
        return [PGDCallback(self.settings.pgd())] if self.settings.adv_radius > 0 else []

    def noise_loss(self, model, x_u, y):
        if self.settings.adv_radius > 0:
            self._gen = self._gen or generator_on(x_u.device, self.settings.seed + 15_485_863)
            a = self.settings.pgd()(model, x_u.detach(), y, self._gen) - x_u.detach()
            x_u = (x_u + a).clamp(0, 1)
        return F.cross_entropy(model(x_u), y)
