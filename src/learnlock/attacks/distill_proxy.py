"""`distill-proxy`: the trained authorized network labels clean auxiliary images; the student
never sees the published pixels (issue 23).

Threat model: the attacker can query the trained authorized network (AttackContext.teacher; e.g.
it is deployed behind an API, or its weights leaked) on `queries` clean images of the same kind
(AttackContext.aux), and trains on those alone. No data-level protection can act on this: it
bounds what any protection can claim once the trained network is exposed, and is to be read
against the aux-only baseline (the same net trained on the same aux images with their true
labels).

Labels (`labels`):
- `top1`: the teacher's arg-max class of each queried image (hard labels; `queries` queries);
- `soft`: KL to the teacher's softened outputs (temperature `temperature`, loss x T^2) on every
  augmented view of the queried images (the `queries` distinct images, queried once per epoch).

The queried images are a seeded choice (`subset_seed`) of `queries` aux images, as even across
classes as the aux split allows (the attacker does not need labels to choose them: the split is
class-balanced).

    attack = create_attack("distill-proxy", queries=1000, labels="top1")
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(teacher=authorized, aux=clean_aux))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import ImageDataset
from ..errors import LearnlockError
from ..losses import DistillationLoss
from ..training import cross_entropy, predict
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class DistillProxySettings(AttackSettings):
    queries: int = 1000          # clean aux images the teacher labels (the query budget)
    labels: str = "top1"         # top1 | soft
    temperature: float = 4.0     # soft labels: softmax temperature of teacher and student
    subset_seed: int = 0         # which aux images are queried

    def check(self):
        self.require(self.queries >= 2,
                     f"queries is a count of images, an integer >= 2; got {self.queries!r}")
        self.require(self.labels in ("top1", "soft"), f"labels must be top1 or soft, got {self.labels!r}")
        self.require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")


@register_attack("distill-proxy")
class DistillProxy(Attack):
    Settings = DistillProxySettings
    presets = {"smoke": dict(queries=40, labels="soft")}  # 40 hard labels alone leave a tiny net at 0.75
    needs = ("teacher", "aux")
    label = "distill-proxy"

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.info: dict | None = None

    def assumptions(self, facts: dict) -> list[str]:
        return ["the published images and labels", f"{facts.get('aux_size', '?')} clean auxiliary images",
                f"{self.settings.queries} queries to the trained authorized network (aux images, "
                f"{self.settings.labels} answers)"]

    def queried(self, aux: ImageDataset) -> ImageDataset:
        n = self.settings.queries
        if n > len(aux):
            raise LearnlockError(f"distill-proxy: a budget of {n} queries needs at least {n} aux images, the aux "
                                 f"set has {len(aux)}; lower `queries` or give a larger aux split")
        g = torch.Generator().manual_seed(self.settings.subset_seed)
        perm = torch.randperm(len(aux), generator=g)
        # round-robin over classes (aux labels only order the choice; they never reach the student)
        by_class = [perm[aux.labels[perm] == c].tolist() for c in range(aux.num_classes)]
        order = [items[i] for i in range(max(map(len, by_class))) for items in by_class if i < len(items)]
        return aux.subset(sorted(order[:n]))

    def transform(self, data, context):
        if context.aux.num_classes != data.num_classes:
            raise LearnlockError(f"distill-proxy: aux has {context.aux.num_classes} classes, the published set "
                                 f"{data.num_classes}")
        query = self.queried(context.aux)
        top1 = predict(context.teacher, query).argmax(1).cpu()
        self.info = {"queries": len(query), "labels": self.settings.labels,
                     "teacher_agreement_with_true_labels": round(float((top1 == query.labels).float().mean()), 4)}
        return ImageDataset(query.images, top1.long(), query.classes, query.ids, f"{query.source}|teacher-labels")

    def loss(self, context):
        if self.settings.labels == "soft":
            return DistillationLoss(context.teacher, self.settings.temperature)
        return cross_entropy

    def report(self):
        return self.info
