"""`adversarial-training`: PGD adversarial training (Madry et al., ICLR 2018) on the published
images. Unlearnable noise of L-inf radius rho cannot stay a shortcut for a model trained to be
robust inside a ball of radius eps >= rho (Tao et al. 2021; Fu et al. 2022).

Each batch is replaced by its PGD examples: L-inf, radius `eps` (default 8/255), step `step`
(2/255), `steps` (10) iterations from a uniform random start, maximising cross-entropy on the
current model, pixels kept in [0, 1]. The inner maximisation runs the model in eval mode so
it does not move BatchNorm statistics; the outer step trains on the result as usual.

    model = create_attack("adversarial-training", eps=8/255).train(published, "resnet18", 0, RECIPES["ue-gpu"])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..training import Callback
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class PGDSettings(AttackSettings):
    eps: float = 8 / 255    # L-inf radius, [0, 1] pixel units
    step: float = 2 / 255   # step size per iteration, [0, 1] pixel units
    steps: int = 10         # PGD iterations
    random_start: bool = True

    def check(self):
        self.require(0 < self.eps <= 1, f"eps is an L-inf radius in (0, 1] pixel units (8/255 = 0.031), got {self.eps}")
        self.require(0 < self.step <= 1, f"step must be in (0, 1] pixel units, got {self.step}")
        self.require(isinstance(self.steps, int) and self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")


def pgd(model, x: torch.Tensor, y: torch.Tensor, s: PGDSettings, gen: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD on cross-entropy: returns x_adv with |x_adv - x|_inf <= eps and pixels in [0, 1].
    `y` may be class indices or probabilities."""
    was_training = model.training
    model.eval()
    x = x.detach()
    if s.random_start:
        noise = torch.rand(x.shape, generator=gen).to(x.device) if gen is not None else torch.rand_like(x)
        adv = (x + (noise * 2 - 1) * s.eps).clamp(0, 1)
    else:
        adv = x.clone()
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)  # only the input's gradient is needed
    try:
        for _ in range(s.steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + s.step * grad.sign()
            adv = torch.min(torch.max(adv, x - s.eps), x + s.eps).clamp(0, 1)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return adv.detach()


class PGDCallback(Callback):
    def __init__(self, settings: PGDSettings):
        self.s = settings

    def on_fit_start(self, model, recipe):
        self.gen = torch.Generator().manual_seed(recipe.seed + 104729)

    def on_batch(self, model, x, y, step):
        return pgd(model, x, y, self.s, self.gen), y


@register_attack("adversarial-training")
class AdversarialTraining(Attack):
    Settings = PGDSettings

    def callbacks(self, context):
        return [PGDCallback(self.settings)]
