"""Provably Unlearnable Examples (Wang et al., "Provably Unlearnable Data Examples", NDSS 2025).

Norm L-inf, rho (default 8/255) in [0, 1] pixel units. Error-minimizing noise crafted against a
randomly weight-perturbed surrogate, so that the whole Gaussian neighbourhood of the surrogate
learns little (which is what certified (q, eta)-learnability, `learnlock certify`, measures):
    min_delta min_theta E_{e ~ N(0, sigma^2 I)} CE(f_{theta + e}(x + delta), y)
Same rounds as `em`, but the surrogate trains under `train_draws` weight draws per step and each
noise step averages the loss over `draws` weight draws. As in the reference code the weight noise
switches on once plain min-min reaches `warmup_accuracy` on x + delta, and the defaults follow its
scripts: class-wise, sigma 0.25, 10 draws, 20 surrogate steps per round, 1 noise step of
0.8/255 per batch, stop error 0.1. Difference: the reference ramps the training noise from 0 to
sigma within each step; here every draw is at sigma.

    x_q = create_protection("pue", surrogate="cnn").apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..losses import WeightNoiseLoss, generator_on, noisy_params
from ..training import cross_entropy
from .base import register_protection
from .em import EMSettings, MinMin


@dataclass(frozen=True)
class PUESettings(EMSettings):
    classwise: bool = True
    train_steps: int = 20
    sigma: float = 0.25            # std of the Gaussian noise on every parameter
    draws: int = 10                # weight draws averaged per noise step
    train_draws: int = 10          # weight draws averaged per surrogate step
    warmup_accuracy: float = 0.5   # weight noise switches on once the accuracy on x + delta reaches this

    def __post_init__(self):
        super().__post_init__()
        self.require(self.sigma > 0 and self.draws >= 1 and self.train_draws >= 1 and 0 <= self.warmup_accuracy <= 1,
                     "sigma must be > 0, draws and train_draws >= 1, warmup_accuracy in [0, 1]")


@register_protection("pue")
class ProvablyUnlearnable(MinMin):
    """PUE noise (Wang et al. 2024); see the module docstring."""

    Settings = PUESettings
    presets = {"smoke": dict(surrogate="cnn", max_rounds=2, train_steps=2, batch_size=8, draws=2, train_draws=2,
                             warmup_accuracy=0.0)}

    def reset(self):
        self.robust = self.settings.warmup_accuracy <= 0
        self.noisy_rounds = 0
        self.gen = None  # on the device of the run, made at first use

    def draws(self, model) -> torch.Generator:
        self.gen = self.gen or generator_on(next(model.parameters()).device, self.settings.seed + 32_452_843)
        return self.gen

    def train_loss(self, model):
        if not self.robust:
            return cross_entropy
        gen = self.draws(model)
        return WeightNoiseLoss(model, self.settings.sigma, self.settings.train_draws,
                               seed=int(torch.randint(2**31, (1,), generator=gen, device=gen.device)))

    def noise_loss(self, model, x_u, y):
        if not self.robust:
            return F.cross_entropy(model(x_u), y)
        total = 0.0
        for _ in range(self.settings.draws):
            total = total + F.cross_entropy(
                functional_call(model, noisy_params(model, self.settings.sigma, self.draws(model)), (x_u,)), y)
        return total / self.settings.draws

    def end_round(self, accuracy: float) -> None:
        self.noisy_rounds += int(self.robust)
        self.robust = self.robust or accuracy >= self.settings.warmup_accuracy

    def can_stop(self) -> bool:
        return self.noisy_rounds > 0  # plain min-min may converge first; PUE needs noisy rounds

    def extra_state(self) -> dict:
        return {"robust": torch.tensor(int(self.robust)), "noisy_rounds": torch.tensor(self.noisy_rounds)}

    def load_extra_state(self, state: dict) -> None:
        self.robust = bool(state["robust"].item())
        self.noisy_rounds = int(state["noisy_rounds"].item())

    def manifest_extra(self) -> dict:
        return {**super().manifest_extra(), "noisy_rounds": self.noisy_rounds}
