from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ..data import ImageDataset
from ..errors import LearnlockError
from ..models import create_model
from ..training import Callback, Loss, Recipe, cross_entropy, fit


@dataclass
class AttackContext:
    """What the threat model gives the attacker beyond the published data."""

    teacher: nn.Module | None = None       # the trained authorized network (distillation)
    aux: ImageDataset | None = None        # clean data disjoint from the protected set
    workdir: Path | None = None


class Attack:
    """A hacker: trains `arch` from init `seed` on published data, changing only what the
    threat model allows (a data transform, a loss, or a training-time callback) and reusing
    the one training loop."""

    name = ""
    needs: tuple[str, ...] = ()   # fields of AttackContext that must be set

    def loss(self, context: AttackContext) -> Loss:
        return cross_entropy

    def callbacks(self, context: AttackContext) -> list[Callback]:
        return []

    def transform(self, data: ImageDataset, context: AttackContext) -> ImageDataset:
        return data

    def train(self, published: ImageDataset, arch: str, seed: int, recipe: Recipe,
              context: AttackContext | None = None, progress: bool = True) -> nn.Module:
        context = context or AttackContext()
        for need in self.needs:
            if getattr(context, need) is None:
                raise LearnlockError(f"attack {self.name!r} needs {need} (see AttackContext)")
        data = self.transform(published, context)
        model = create_model(arch, data.num_classes, data.in_channels, seed=seed)
        return fit(model, data, replace(recipe, seed=seed), callbacks=self.callbacks(context),
                   loss=self.loss(context), progress=progress, desc=f"{self.name} {arch} seed {seed}")
