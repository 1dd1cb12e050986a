"""L-inf PGD (Madry et al., ICLR 2018), shared by the `adversarial-training` attack and the `rem`
protection (which must survive that attack), so neither family reaches into the other.

    adv = PGD(eps=8/255, step=2/255, steps=10)(model, x, y, gen)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .losses import generator_on
from .models import frozen
from .training import Callback


@dataclass(frozen=True)
class PGD:
    eps: float = 8 / 255    # L-inf radius, [0, 1] pixel units
    step: float = 2 / 255   # step size per iteration, [0, 1] pixel units
    steps: int = 10         # iterations
    random_start: bool = True

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """x_adv maximising cross-entropy with |x_adv - x|_inf <= eps and pixels in [0, 1]. `y` may be
        class indices or probabilities. The model runs in eval mode so BatchNorm statistics stay put."""
        was_training = model.training
        model.eval()
        x = x.detach()
        if self.random_start:
            noise = (torch.rand(x.shape, generator=gen, device=gen.device).to(x.device) if gen is not None
                     else torch.rand_like(x))
            adv = (x + (noise * 2 - 1) * self.eps).clamp(0, 1)
        else:
            adv = x.clone()
        try:
            with frozen(model):  # only the input's gradient is needed
                for _ in range(self.steps):
                    adv.requires_grad_(True)
                    loss = F.cross_entropy(model(adv), y)
                    (grad,) = torch.autograd.grad(loss, adv)
                    adv = adv.detach() + self.step * grad.sign()
                    adv = torch.min(torch.max(adv, x - self.eps), x + self.eps).clamp(0, 1)
        finally:
            model.train(was_training)
        return adv.detach()


class PGDCallback(Callback):
    """Adversarial training: every batch is replaced by its PGD examples (random starts seeded
    from the recipe's seed)."""

    def __init__(self, pgd: PGD):
        self.pgd = pgd

    def on_fit_start(self, model, recipe):  # on the model's device: no host draw per batch
        self.gen = generator_on(next(model.parameters()).device, recipe.seed + 104729)

    def on_batch(self, model, x, y, step):
        return self.pgd(model, x, y, self.gen), y
