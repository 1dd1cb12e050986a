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

from ..pgd import PGD, PGDCallback
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

    def pgd(self) -> PGD:
        return PGD(self.eps, self.step, self.steps, self.random_start)


@register_attack("adversarial-training")
class AdversarialTraining(Attack):
    Settings = PGDSettings

    def callbacks(self, context):
        return [PGDCallback(self.settings.pgd())]
