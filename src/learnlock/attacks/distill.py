"""`distill`: a student trained with KL to the trained authorized network's outputs on the
published images (UGE Eq. 10, "Distill"); temperature T, loss scaled by T^2 (Hinton et al.)."""

from dataclasses import dataclass

from ..losses import DistillationLoss
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class DistillSettings(AttackSettings):
    temperature: float = 4.0   # softmax temperature of teacher and student
    alpha: float = 0.0         # weight of CE on the labels (0 = pure distillation, UGE's Distill)

    def check(self):
        self.require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.require(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")


@register_attack("distill")
class Distill(Attack):
    Settings = DistillSettings
    presets = {"smoke": {}}  # the defaults already run in seconds
    needs = ("teacher",)
    label = "Distill"

    def loss(self, context):
        return DistillationLoss(context.teacher, self.settings.temperature, self.settings.alpha)
