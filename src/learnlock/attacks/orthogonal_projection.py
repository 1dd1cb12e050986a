"""`orthogonal-projection`: Sandoval-Segura et al., "What Can We Learn from Unlearnable
Datasets?", NeurIPS 2023.

Threat model: the attacker holds only the published images and labels (no clean data, no key,
no knowledge of the scheme). Many unlearnable-example shortcuts are (near) linearly separable,
so a linear classifier fit on the published data finds them; projecting its class directions out
of every image removes them.

A multinomial logistic regression on flattened pixels in [0, 1] (weights D x K, bias; full batch,
Adam, `steps` steps at `lr`, L2 `weight_decay`, zero init: deterministic) is fit on the published
images. The top `directions` right singular vectors Q (D x k) of its weight matrix (None: all K,
the paper's choice) span the removed subspace; every image becomes x - Q Q^T (x - mean), the
orthogonal projection about the published mean (so pixels stay near their range), clipped to
[0, 1] and rounded to 8 bits. The same projection is applied to the test images
(`transform_test`), then a network trains as usual.

`report()` gives the linear model's training accuracy (how linearly separable the published
data are) and the singular values of its weights.

    attack = create_attack("orthogonal-projection")
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"])
    acc = evaluate(model, attack.transform_test(test))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import ImageDataset
from ..errors import LearnlockError
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class OrthogonalProjectionSettings(AttackSettings):
    directions: int | None = None   # removed directions (None: one per class, all of the linear model's)
    steps: int = 300                # full-batch Adam steps of the logistic regression
    lr: float = 0.01                # its learning rate
    weight_decay: float = 1e-4      # its L2 penalty

    def check(self):
        self.require(self.directions is None or (isinstance(self.directions, int) and self.directions >= 1),
                     f"directions must be None (one per class) or an integer >= 1, got {self.directions!r}")
        self.require(self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        self.require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


def fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int, lr: float, weight_decay: float):
    """(weights D x K, bias K) of a multinomial logistic regression on float rows x."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


@register_attack("orthogonal-projection")
class OrthogonalProjection(Attack):
    Settings = OrthogonalProjectionSettings
    presets = {"smoke": dict(steps=100)}

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.basis: torch.Tensor | None = None   # D x k orthonormal: the removed directions
        self.mean: torch.Tensor | None = None    # D: the published mean (the projection's centre)
        self.info: dict | None = None

    def transform(self, data, context):
        s = self.settings
        k = s.directions or data.num_classes
        dim = data.images[0].numel()
        if k > min(dim, data.num_classes):
            raise LearnlockError(f"orthogonal-projection: a {data.num_classes}-class linear model has at most "
                                 f"{data.num_classes} directions; directions={k}")
        x = data.images.flatten(1).float() / 255
        with torch.enable_grad():
            w, b = fit_linear(x, data.labels, data.num_classes, s.steps, s.lr, s.weight_decay)
        u, sv, _ = torch.linalg.svd(w, full_matrices=False)     # w = U S V^T, U: D x K
        self.basis, self.mean = u[:, :k].contiguous(), x.mean(0)
        self.info = {"linear_train_accuracy": round(float(((x @ w + b).argmax(1) == data.labels).float().mean()), 4),
                     "singular_values": [round(float(v), 4) for v in sv], "directions": k}
        return self.project(data)

    def project(self, data: ImageDataset) -> ImageDataset:
        if self.basis is None:
            raise LearnlockError("orthogonal-projection: call transform (or train) first")
        if data.images[0].numel() != self.basis.shape[0]:
            raise LearnlockError(f"orthogonal-projection was fit on images of {self.basis.shape[0]} values, "
                                 f"got {tuple(data.images.shape[1:])}")
        x = data.images.flatten(1).float() / 255
        c = x - self.mean
        out = x - (c @ self.basis) @ self.basis.T
        images = (out.clamp(0, 1) * 255).round().to(torch.uint8).view_as(data.images)
        return data.with_images(images, source=f"{data.source}|orthogonal-projection")

    def transform_test(self, data):
        return self.project(data)

    def report(self):
        return self.info
