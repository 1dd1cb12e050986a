"""`distill`: a student trained with KL to the trained authorized network's outputs on the
published images (UGE Eq. 10, "Distill"); temperature T, loss scaled by T^2 (Hinton et al.)."""

from ..training import DistillationLoss
from . import register_attack
from .base import Attack


@register_attack("distill")
class Distill(Attack):
    name = "distill"
    needs = ("teacher",)

    def __init__(self, temperature: float = 4.0, alpha: float = 0.0):
        self.temperature = temperature
        self.alpha = alpha

    def loss(self, context):
        return DistillationLoss(context.teacher, self.temperature, self.alpha)
