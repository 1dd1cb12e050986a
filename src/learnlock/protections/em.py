"""Error-minimizing noise (Huang et al., "Unlearnable Examples", ICLR 2021), and the min-min
engine that `rem` and `pue` reuse.

Norm L-inf, rho (default 8/255) in [0, 1] pixel units. Solves
    min_delta min_theta  E CE(f_theta(x + delta), y),   |delta|_inf <= rho
by alternating rounds, as in the reference code:
  1. train the surrogate f (default resnet18, SGD lr 0.1, momentum 0.9, wd 5e-4, no
     augmentation) for `train_steps` batches of the current x + delta, quantised to 8 bits as it
     will be published;
  2. update delta on every item, batch by batch: `noise_steps` signed-gradient steps of size
     `step_size` descending the loss on the (eval-mode) surrogate, projected onto the rho-ball
     and [0, 1]. Class-wise: each class has one delta, set to the mean of its items' updated
     copies in the batch;
  3. stop once the surrogate's accuracy on x + delta reaches 1 - stop_error, or after
     `max_rounds` (the manifest says which).
Sample-wise defaults are the paper's (20 noise steps, stop error 0.01); class-wise uses 1 step
and stop error 0.1. Each round is checkpointed in the work folder, so a killed run resumes.
Difference from the reference: SGD momentum restarts every round (each round is one call of
learnlock's single training loop).

    prot = create_protection("em", rho=8 / 255, classwise=True, surrogate="cnn")
    x_q = prot.apply(load_dataset("cifar10", per_class=100))   # uint8, same shape
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..device import current_device
from ..data.base import ImageDataset
from ..models import create_model, frozen, list_models
from ..callbacks import ItemTargets
from ..recipe import Recipe
from ..training import Callback, cross_entropy, fit
from .base import Protection, ProtectionSettings, project_quantize, register_protection
from .resumable import Checkpoint
from .surrogate import alternate_rounds


@dataclass(frozen=True)
class EMSettings(ProtectionSettings):
    classwise: bool = False        # one delta per class instead of one per item
    surrogate: str = "resnet18"    # surrogate architecture (`learnlock list`)
    train_steps: int = 10          # surrogate SGD steps per round
    noise_steps: int | None = None  # signed-gradient steps per batch per round (None: 20 sample-wise, 1 class-wise)
    step_size: float = 0.8 / 255   # per noise step, [0, 1] pixel units
    stop_error: float | None = None  # stop at this surrogate error on x + delta (None: 0.01 / 0.1 class-wise)
    max_rounds: int = 100          # give up after this many rounds (reported in the manifest)
    batch_size: int = 128
    lr: float = 0.1                # surrogate SGD learning rate

    def __post_init__(self):
        super().__post_init__()
        if self.noise_steps is None:
            object.__setattr__(self, "noise_steps", 1 if self.classwise else 20)
        if self.stop_error is None:
            object.__setattr__(self, "stop_error", 0.1 if self.classwise else 0.01)
        self.require(self.surrogate in list_models(),
                     f"unknown surrogate {self.surrogate!r}; choose one of {list_models()}")
        self.require(isinstance(self.noise_steps, int) and self.noise_steps >= 1,
                     "noise_steps must be an integer >= 1")
        self.require(self.train_steps >= 0, "train_steps must be >= 0")
        self.require(0 < self.step_size <= 1,
                     f"step_size is in (0, 1] pixel units (0.8/255 = 0.0031), got {self.step_size}")
        self.require(isinstance(self.stop_error, (int, float)) and 0 <= self.stop_error < 1,
                     "stop_error must be in [0, 1)")
        self.require(self.max_rounds >= 1, "max_rounds must be >= 1")
        self.require(self.batch_size >= 2, "batch_size must be >= 2")
        self.require(self.lr > 0, "lr must be > 0")


class MinMin(Protection):
    """The alternating min-min engine. Subclasses change what the surrogate trains on
    (`train_loss`, `train_callbacks`) and what delta minimises (`noise_loss`)."""

    Settings = EMSettings

    # ----------------------------------------------------------------- hooks
    def reset(self) -> None:
        """Fresh per-run state, so that apply() twice gives the same bytes."""

    def train_loss(self, model: nn.Module):
        return cross_entropy

    def train_callbacks(self, model: nn.Module) -> list[Callback]:
        return []

    def noise_loss(self, model: nn.Module, x_u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x_u), y)

    def end_round(self, accuracy: float) -> None:
        """After each round's accuracy check (PUE switches its weight noise on here)."""

    def can_stop(self) -> bool:
        """Whether the stop criterion may end the run now (PUE: not before a noisy round)."""
        return True

    def constrain(self, x: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
        """The allowed perturbation nearest to `d` for images `x` (None: a class-wise delta, no
        image bound): here the rho-ball and [0, 1]; `keyed` keeps d inside its key's blind spot."""
        d = d.clamp(-self.settings.rho, self.settings.rho)
        return d if x is None else (x + d).clamp_(0, 1) - x

    def targets(self, idx: torch.Tensor) -> torch.Tensor | None:
        """Per-item training targets (class probabilities) for items `idx`, or None for the labels
        (keyed's teacher-aware noise uses the authorized network's soft outputs)."""
        return None

    def descent(self, grad: torch.Tensor) -> torch.Tensor:
        """The step direction of a noise update, in L-inf units (peak 1): the gradient's sign."""
        return grad.sign()

    def start_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """The random starting delta, made admissible (keyed projects it into its blind spot)."""
        return delta

    def ident_extra(self) -> dict:
        """What else a resumable state must match (keyed: the key's fingerprint)."""
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ----------------------------------------------------------------- engine
    def device(self) -> torch.device:
        return current_device()

    def surrogate_recipe(self, round_: int) -> Recipe:
        s = self.settings
        return Recipe(name=f"{self.name}-surrogate", epochs=1, batch_size=s.batch_size, optimizer="sgd",
                      lr=s.lr, momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="constant",
                      augment="none", seed=s.seed * 100_003 + round_)

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        self.reset()
        dev = self.device()
        x = data.float_images().to(dev)
        y = data.labels.to(dev)
        # uploaded once: every round's surrogate training then finds its images on the device
        on_dev = ImageDataset(data.images.to(dev), y, data.classes, data.ids, data.source)
        n = len(data)
        gen = torch.Generator().manual_seed(s.seed)
        rows = data.num_classes if s.classwise else n
        delta = (torch.rand((rows,) + tuple(x.shape[1:]), generator=gen) * 2 - 1).mul_(s.rho).to(dev)
        delta = self.start_delta(delta)
        model = create_model(s.surrogate, data.num_classes, data.in_channels, seed=s.seed).to(dev)
        # max_rounds stays out: a finished or killed run can be continued with more rounds
        kept = {k: v for k, v in asdict(s).items() if k != "max_rounds"}
        ckpt = Checkpoint(workdir, f"{self.name}-state", {"settings": kept, "data": data.fingerprint(),
                                                           "method": self.name, **self.ident_extra()}, self.name)
        extra = SimpleNamespace(state_dict=self.extra_state, load_state_dict=self.load_extra_state)
        parts = {"delta": delta, "model": model, "extra": extra}
        start, self.log = ckpt.restore(parts)

        def step(r):
            self._train_round(model, on_dev, x, delta, r)
            self._noise_round(model, x, y, delta, r)
            acc = self._accuracy(model, data, x, delta)
            self.end_round(acc)
            return acc

        self.converged = alternate_rounds(
            start, s.max_rounds, step, lambda acc: acc >= 1 - s.stop_error and self.can_stop(), self.log,
            lambda done: ckpt.save(done, self.log, parts), self.name, self.progress)
        full = delta[data.labels.to(dev)] if s.classwise else delta
        return (x + full).clamp(0, 1).cpu()

    def _perturbed(self, x: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor):
        d = delta[labels[idx]] if self.settings.classwise else delta[idx]
        return (x[idx] + d).clamp(0, 1)

    def _train_round(self, model, data, x, delta, r):
        s = self.settings
        if s.train_steps == 0:
            return
        n = len(data)
        g = torch.Generator().manual_seed(s.seed * 7919 + r)
        need = s.train_steps * s.batch_size
        idx = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))])[:need]
        at = idx.to(x.device)
        x_q = project_quantize(data.images[at], self._perturbed(x, delta, data.labels, at), s.rho)
        sub = ImageDataset(x_q, data.labels[at], data.classes, tuple(str(i) for i in idx.tolist()), data.source)
        soft = self.targets(idx)
        extra = [ItemTargets(soft)] if soft is not None else []
        fit(model, sub, self.surrogate_recipe(r), callbacks=self.train_callbacks(model) + extra,
            loss=self.train_loss(model), progress=False)

    def _noise_round(self, model, x, y, delta, r):
        s = self.settings
        model.eval()
        g = torch.Generator().manual_seed(s.seed * 104_729 + r)
        order = torch.randperm(len(x), generator=g).to(x.device)
        with frozen(model):  # only delta's gradient is needed
            for b in order.split(s.batch_size):
                xb, yb = x[b], y[b]
                soft = self.targets(b)
                tb = yb if soft is None else soft.to(x.device)
                d = (delta[yb] if s.classwise else delta[b]).clone()
                for _ in range(s.noise_steps):
                    d.requires_grad_(True)
                    loss = self.noise_loss(model, (xb + d).clamp(0, 1), tb)
                    (grad,) = torch.autograd.grad(loss, d)
                    d = self.constrain(xb, d.detach() - s.step_size * self.descent(grad))
                if s.classwise:  # each class takes the mean of its items' updated copies
                    total = torch.zeros_like(delta).index_add_(0, yb, d)
                    count = torch.bincount(yb, minlength=len(delta)).to(d.dtype)
                    seen = count > 0
                    delta[seen] = self.constrain(None, total[seen] / count[seen].view(-1, 1, 1, 1))
                else:
                    delta[b] = d

    @torch.no_grad()
    def _accuracy(self, model, data, x, delta) -> float:
        model.eval()
        labels = data.labels.to(x.device)
        correct = 0
        for b in torch.arange(len(x), device=x.device).split(512):
            x_q = project_quantize(data.images[b.cpu()], self._perturbed(x, delta, labels, b).cpu(),
                                   self.settings.rho)
            correct += (model(x_q.to(x.device).float().div(255)).argmax(1) == labels[b]).sum().item()
        return correct / len(x)

    def manifest_extra(self) -> dict:
        return {"rounds": len(getattr(self, "log", [])), "converged": getattr(self, "converged", None),
                "log": getattr(self, "log", [])}


@register_protection("em")
class ErrorMinimizing(MinMin):
    """Error-minimizing noise (Huang et al. 2021), sample-wise or class-wise; see the module docstring."""
    presets = {"smoke": dict(surrogate="cnn", max_rounds=2, noise_steps=2, train_steps=2, batch_size=8)}
