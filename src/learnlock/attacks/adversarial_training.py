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

from ..errors import LearnlockError
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
        self.require(self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")

    def pgd(self) -> PGD:
        return PGD(self.eps, self.step, self.steps, self.random_start)


@register_attack("adversarial-training")
class AdversarialTraining(Attack):
    Settings = PGDSettings
    presets = {"smoke": dict(steps=2, eps=4 / 255, step=2 / 255)}
    calibration = ("calibrated", "at 8/255 (5 steps) learns EM at 8/255 as well as clean data at the 10k tier "
                   "(ratio 1.02; published: EM learned under adversarial training)")

    def callbacks(self, context):
        return [PGDCallback(self.settings.pgd())]


@dataclass(frozen=True)
class RhoPGDSettings(AttackSettings):
    step_share: float = 0.25   # PGD step as a share of eps (eps = the published rho)
    steps: int = 10            # PGD iterations
    random_start: bool = True

    def check(self):
        self.require(0 < self.step_share <= 1, f"step_share is a share of eps in (0, 1], got {self.step_share}")
        self.require(self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")


@register_attack("adversarial-training-rho")
class AdversarialTrainingRho(Attack):
    """PGD adversarial training at eps = the published rho (issue 23): the attacker reads the
    budget from the manifest (AttackContext.rho) and trains robust inside exactly that ball, so a
    protection cannot win by spending more budget than adversarial training was run at. Step
    `step_share` * rho, `steps` iterations, L-inf, as `adversarial-training` otherwise.

        model = create_attack("adversarial-training-rho").train(published, "cnn", 0, RECIPES["cpu"],
                                                                 AttackContext(rho=manifest["rho"]))
    """

    Settings = RhoPGDSettings
    presets = {"smoke": dict(steps=2)}
    needs = ("rho",)

    def check_context(self, context):
        super().check_context(context)
        rho = context.rho
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
            raise LearnlockError(f"adversarial-training-rho: the published rho is an L-inf radius in (0, 1] pixel "
                                 f"units (32/255 = 0.125), got {rho!r}")

    def callbacks(self, context):
        s, eps = self.settings, float(context.rho)
        return [PGDCallback(PGD(eps, s.step_share * eps, s.steps, s.random_start))]
