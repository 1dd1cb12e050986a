"""Weight-space recovery (Provably Unlearnable Examples, Wang et al. 2024, Sec. 5): the attacker
trains on the published data, then moves the weights a bounded L2 distance eta using a small
clean set (`context.aux`) to recover clean accuracy. It is the empirical counterpart of the
certified (q, eta)-learnability: a protection is only as good as the best model within eta.

- `recover`: fine-tune on the clean set (SGD, constant lr) and, after every step, project the
  weight change theta - theta_0 onto the L2 sphere of radius `eta` (all parameters together,
  as in the PUE paper; BatchNorm running statistics are buffers, not weights, and follow the
  clean data freely).
- `recover-random`: random search: `trials` Gaussian directions over all parameters, each
  scaled to norm `eta`; keep the one with the best accuracy on the clean set.

`curve(...)` trains the base model once and reports test accuracy for each eta of `etas`.

    model = create_attack("recover", eta=1.0).train(published, "cnn", 0, RECIPES["cpu"], AttackContext(aux=clean))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..data import ImageDataset
from ..models import create_model
from ..recipe import Recipe
from ..training import Callback, evaluate, fit
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class RecoverSettings(AttackSettings):
    eta: float = 1.0                          # L2 radius of the weight change, over all parameters
    epochs: int = 10                          # fine-tuning passes over the clean set
    lr: float = 0.01                          # fine-tuning step size (SGD, momentum 0.9, no decay)
    trials: int = 50                          # recover-random: random directions tried
    etas: tuple = (0.25, 0.5, 1.0, 2.0, 4.0)  # radii of `curve` (accuracy vs eta)

    def check(self):
        self.require(self.eta >= 0, f"eta is an L2 radius and must be >= 0, got {self.eta}")
        self.require(self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        self.require(self.trials >= 1, f"trials must be an integer >= 1, got {self.trials!r}")
        self.require(all(e >= 0 for e in self.etas), f"etas must all be >= 0, got {self.etas}")


def weights(model: nn.Module) -> list[torch.Tensor]:
    return list(model.parameters())


def l2_norm(tensors) -> float:
    return torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors)).item()


def change_norm(model: nn.Module, start: list[torch.Tensor]) -> float:
    return l2_norm(p - s for p, s in zip(weights(model), start))


@torch.no_grad()
def project_to_sphere(model: nn.Module, start: list[torch.Tensor], eta: float) -> float:
    """Rescale theta - theta_0 to L2 norm exactly `eta` (unchanged when it is zero); returns the
    norm it had."""
    norm = change_norm(model, start)
    if norm > 0:
        for p, s in zip(weights(model), start):
            p.copy_(s + (p - s) * (eta / norm))
    return norm


class SphereProjection(Callback):
    def __init__(self, eta: float):
        self.eta = eta

    def on_fit_start(self, model, recipe):
        self.start = [p.detach().clone() for p in weights(model)]

    def on_step_end(self, model, step):
        project_to_sphere(model, self.start, self.eta)


class Recover(Attack):
    Settings = RecoverSettings
    needs = ("aux",)
    aux_match = "classes"  # fine-tunes on the aux labels

    def base_model(self, published: ImageDataset, arch: str, seed: int, recipe: Recipe, progress: bool) -> nn.Module:
        model = create_model(arch, published.num_classes, published.in_channels, seed=seed)
        return fit(model, published, replace(recipe, seed=seed), progress=progress,
                   desc=f"{self.name} base {arch} seed {seed}")

    def recover(self, model: nn.Module, aux: ImageDataset, recipe: Recipe, eta: float, progress: bool) -> nn.Module:
        raise NotImplementedError

    def train_on(self, published, arch, seed, recipe, context, progress=True, callbacks=()):
        model = self.base_model(published, arch, seed, recipe, progress)
        return self.recover(model, context.aux, replace(recipe, seed=seed), self.settings.eta, progress)

    def evaluate(self, data, test, arch, seed, recipe, context, progress=True, callbacks=()) -> dict:
        """The cell's accuracy at `eta`, and the whole curve over `etas` (and `eta`) from one base model."""
        etas = sorted({*self.settings.etas, self.settings.eta})
        curve = type(self)(replace(self.settings, etas=tuple(etas))).curve(data, self.transform_test(test), arch,
                                                                          seed, recipe, context, progress)
        return {"accuracy": next(c["accuracy"] for c in curve if c["eta"] == self.settings.eta), "curve": curve}

    def curve(self, published, test, arch, seed, recipe, context, progress=True) -> list[dict]:
        """Test accuracy after recovery at each eta of settings.etas (eta 0 = no recovery)."""
        self.check_context(context)
        base = self.base_model(published, arch, seed, recipe, progress)
        out = [{"eta": 0.0, "accuracy": evaluate(base, test)}]
        for eta in self.settings.etas:
            if eta == 0:
                continue
            model = self.recover(copy.deepcopy(base), context.aux, replace(recipe, seed=seed), eta, progress)
            out.append({"eta": float(eta), "accuracy": evaluate(model, test)})
        return out


@register_attack("recover")
class RecoverFinetune(Recover):
    presets = {"smoke": dict(epochs=2, eta=0.5, etas=(0.5,))}

    def recover(self, model, aux, recipe, eta, progress):
        r = replace(recipe, epochs=self.settings.epochs, lr=self.settings.lr, schedule="constant",
                    weight_decay=0.0, nesterov=False, momentum=0.9)
        return fit(model, aux, r, callbacks=[SphereProjection(eta)], progress=progress,
                   desc=f"recover eta={eta:g}")


@register_attack("recover-random")
class RecoverRandom(Recover):
    presets = {"smoke": dict(trials=3, eta=0.5, etas=(0.5,))}

    @torch.no_grad()
    def recover(self, model, aux, recipe, eta, progress):
        start = [p.detach().clone() for p in weights(model)]
        gen = torch.Generator().manual_seed(recipe.seed + 15485863)
        best, best_acc = None, evaluate(model, aux)
        for _ in range(self.settings.trials):
            direction = [torch.randn(p.shape, generator=gen) for p in start]
            norm = l2_norm(direction)
            for p, s, d in zip(weights(model), start, direction):
                p.copy_(s + d.to(p.device) * (eta / norm))
            acc = evaluate(model, aux)
            if acc > best_acc:
                best, best_acc = [p.detach().clone() for p in weights(model)], acc
        for p, s, b in zip(weights(model), start, best or start):
            p.copy_(b)
        return model.eval()
