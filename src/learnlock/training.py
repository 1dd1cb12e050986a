"""The one training loop of learnlock: every scenario (authorized user, hacker, attack) calls `fit`.

    recipe = RECIPES["cpu"]
    model = fit(create_model("cnn", 10, 3, seed=0), train_set, recipe)
    print(evaluate(model, test_set))

Data are `ImageDataset`s (uint8); pixels enter models as float in [0, 1]. Variation between
scenarios goes through a pluggable `loss` (e.g. distillation) and `callbacks` (checkpoint
trajectories, batch transforms), never through a copy of this loop.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import ImageDataset
from .device import current_device
from .errors import LearnlockError
from .recipe import RECIPES, Recipe, get_recipe, native_bf16  # noqa: F401  (re-exported for users)


class Callback:
    """Hooks into `fit`. Override what you need; every hook is optional."""

    def on_fit_start(self, model: nn.Module, recipe: Recipe) -> None: ...

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int):
        """Return the (x, y) to train on: a training-time data transform (e.g. PGD examples).
        y may come back as float class probabilities (N x C, e.g. mixup); the default loss takes both."""
        return x, y

    def on_backward(self, model: nn.Module, step: int) -> None:
        """After the backward pass, before the optimiser step (e.g. clip the gradients)."""

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """After the optimiser step (e.g. project the weights back onto a constraint set)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None: ...


class EpochAccuracy(Callback):
    """Accuracy on each named dataset after every epoch, e.g. EpochAccuracy(dev=dev_set): a cell
    reports its final and its best-on-dev accuracy (early stopping is itself a defence)."""

    def __init__(self, **sets: ImageDataset):
        self.sets = sets
        self.history: dict[str, list[float]] = {k: [] for k in sets}

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        for name, data in self.sets.items():
            self.history[name].append(evaluate(model, data))


Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def smoothed_cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


@dataclass(frozen=True)
class AugmentDraw:
    """One batch's augmentation: crop offsets (pixels into the padded image) and flip flags.
    `circular`: the image is padded by wrapping around (a random circular shift, "roll"), which
    commutes exactly with the spectral key layers of `keyed`; zero padding does not."""

    oy: torch.Tensor | None
    ox: torch.Tensor | None
    flip: torch.Tensor | None
    padding: int
    circular: bool = False


def draw_augment(b: int, recipe: Recipe, gen: torch.Generator) -> AugmentDraw:
    oy = ox = flip = None
    rolls = "roll" in recipe.augment
    if ("crop" in recipe.augment or rolls) and recipe.crop_padding > 0:
        p, step = recipe.crop_padding, recipe.crop_step
        oy = torch.randint(0, 2 * p // step + 1, (b,), generator=gen) * step
        ox = torch.randint(0, 2 * p // step + 1, (b,), generator=gen) * step
    if "flip" in recipe.augment:
        flip = torch.rand(b, generator=gen) < 0.5
    return AugmentDraw(oy, ox, flip, recipe.crop_padding, rolls)


def apply_augment(x: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
    """Differentiable in x, so a perturbation can be optimised through the exact augmentation."""
    b, c, h, w = x.shape
    if draw.oy is not None:
        p = draw.padding
        padded = F.pad(x, (p, p, p, p), mode="circular") if draw.circular else F.pad(x, (p, p, p, p))
        rows = (draw.oy.to(x.device)[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (draw.ox.to(x.device)[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if draw.flip is not None:
        x = torch.where(draw.flip.to(x.device)[:, None, None, None], x.flip(3), x)
    return x


def augment_batch(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, vectorised, drawn from `gen` (CPU)."""
    return apply_augment(x, draw_augment(len(x), recipe, gen))


@dataclass(frozen=True)
class Step:
    epoch: int                # 1-based
    step: int                 # 0-based optimiser step
    index: torch.Tensor       # item indices of the batch
    augment: AugmentDraw


def batch_schedule(n: int, recipe: Recipe, steps: int | None = None):
    """Yield the exact batches and augmentations `fit(recipe, steps=steps)` uses on n items, in
    order: recipe.epochs shuffled passes, or with `steps`, that many batches of recipe.batch_size
    items drawn with replacement (all in epoch 1; for step-counted training such as a DDPM's).

    UGE matches gradients on the authorized network's actual training run; this is how it
    replays that run without training."""
    gen = torch.Generator().manual_seed(recipe.seed)
    if steps is not None:
        for step in range(steps):
            idx = torch.randint(n, (recipe.batch_size,), generator=gen)
            yield Step(1, step, idx, draw_augment(len(idx), recipe, gen))
        return
    batches = math.ceil(n / recipe.batch_size)
    step = 0
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(n, generator=gen)
        for i in range(batches):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one item
                continue
            yield Step(epoch, step, idx, draw_augment(len(idx), recipe, gen))
            step += 1


def make_optimizer(model: nn.Module, recipe: Recipe, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                              nesterov=recipe.nesterov and recipe.momentum > 0,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "cosine":
        factor = lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    elif recipe.schedule == "step":
        factor = lambda s: 0.1 ** ((s >= steps // 2) + (s >= 3 * steps // 4))  # noqa: E731
    elif recipe.schedule == "onecycle":
        peak = max(1, round(recipe.warmup * steps))
        factor = lambda s: (s + 1) / peak if s < peak else max(0.0, (steps - s) / max(1, steps - peak))  # noqa: E731
    else:
        factor = lambda s: 1.0  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def check_compatible(model: nn.Module, data: ImageDataset, device: torch.device) -> None:
    """Fail early, in plain words, when the model cannot take these images or labels."""
    x = data.images[:2].to(device).float().div(255)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:
        if "device" in str(e):  # a placement fault is not a shape problem: show it as it is
            raise
        raise LearnlockError(
            f"model cannot take images of shape {tuple(data.images.shape[1:])} from {data.source} "
            f"(check in_channels={data.in_channels}): {str(e).splitlines()[0]}"
        ) from None
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise LearnlockError(
            f"model gives {tuple(out.shape[1:])} outputs but {data.source} has {data.num_classes} classes; "
            f"create it with num_classes={data.num_classes}"
        )


def on_device(chunk: list[Step], device: torch.device) -> list[Step]:
    """Steps of batch_schedule moved to `device` in one copy: indices and draws stacked into one
    int64 tensor (pinned on CUDA, copied without blocking), then sliced per step on the device."""
    def parts(s: Step) -> list[torch.Tensor]:
        return [s.index] + [f for f in (s.augment.oy, s.augment.ox, s.augment.flip) if f is not None]

    stacked = torch.stack([torch.cat(column).long() for column in zip(*map(parts, chunk))])
    if device.type == "cuda":
        stacked = stacked.pin_memory()
    moved, out, at = stacked.to(device, non_blocking=True), [], 0
    for s in chunk:
        a, cols = s.augment, iter(moved[:, at:at + len(s.index)])
        index = next(cols)
        oy, ox = (next(cols) if a.oy is not None else None), (next(cols) if a.ox is not None else None)
        flip = next(cols).bool() if a.flip is not None else None
        out.append(Step(s.epoch, s.step, index, AugmentDraw(oy, ox, flip, a.padding, a.circular)))
        at += len(s.index)
    return out


def epoch_plans(n: int, recipe: Recipe, steps: int | None, device: torch.device) -> Iterator[list[Step]]:
    """batch_schedule in chunks on `device`: one chunk per epoch (with `steps`, per epoch's worth of
    batches), so the host draws and copies once per epoch, never per step."""
    per_epoch = math.ceil(n / recipe.batch_size)
    key = (lambda s: s.epoch) if steps is None else (lambda s: s.step // per_epoch)
    for _, chunk in itertools.groupby(batch_schedule(n, recipe, steps), key=key):
        yield on_device(list(chunk), device)


def fit(
    model: nn.Module,
    data: ImageDataset,
    recipe: Recipe | str = "cpu",
    callbacks: Sequence[Callback] = (),
    loss: Loss = cross_entropy,
    progress: bool = True,
    desc: str = "train",
    steps: int | None = None,
) -> nn.Module:
    """Train `model` on `data` with `recipe`; returns the same model, in eval mode. With
    `steps`, exactly that many optimiser steps on batches drawn with replacement, in place of
    recipe.epochs passes (see `batch_schedule`).

    Deterministic on CPU for fixed model init and `recipe.seed`: data order and augmentation
    come from a private generator, the global RNG is not used. Keeps an accelerator busy: data
    stay on the device as uint8, each epoch's batches are copied there at once, the loss is read
    (and checked for divergence) once per epoch; on CUDA channels_last and, with precision auto
    or bf16, bf16 autocast of the forward pass and loss.
    """
    recipe = get_recipe(recipe)
    device = current_device()
    if len(data) < 2:
        raise LearnlockError(f"{data.source}: need at least 2 training images, got {len(data)}")
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise LearnlockError(f"steps is a count of optimiser steps and must be an integer >= 1, got {steps!r}")
    model.to(device)
    cuda = device.type == "cuda"
    if cuda:  # no change of layout on CPU: fp32 there computes exactly what it always did
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)
    bf16 = recipe.uses_bf16(device)
    if recipe.label_smoothing and loss is cross_entropy:
        loss = functools.partial(smoothed_cross_entropy, smoothing=recipe.label_smoothing)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    check_compatible(model, data, device)
    images = data.images.to(device)
    labels = data.labels.to(device)
    n = len(data)
    total_steps = steps or recipe.epochs * (n // recipe.batch_size + (n % recipe.batch_size >= 2))
    opt, sched = make_optimizer(model, recipe, total_steps)
    model.test_flip = recipe.test_flip  # how the recipe tests what it trains (read by predict)
    for cb in callbacks:
        cb.on_fit_start(model, recipe)
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for plan in epoch_plans(n, recipe, steps, device):
            losses = torch.zeros(len(plan), device=device)   # each step's loss, read once per epoch
            model.train()
            for i, s in enumerate(plan):
                x = apply_augment(images[s.index].float().div_(255), s.augment)
                y = labels[s.index]
                for cb in callbacks:
                    x, y = cb.on_batch(model, x, y, s.step)
                model.train()
                if cuda and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    value = loss(model(x), x, y)
                opt.zero_grad(set_to_none=True)
                value.backward()
                for cb in callbacks:
                    cb.on_backward(model, s.step)
                opt.step()
                sched.step()
                for cb in callbacks:
                    cb.on_step_end(model, s.step)
                losses[i] = value.detach()
                bar.update(1)
            values = losses.tolist()   # the one host sync of an epoch
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise LearnlockError(
                    f"training diverged: loss is {values[bad[0]]} at epoch {plan[bad[0]].epoch}, "
                    f"step {plan[bad[0]].step}; "
                    f"lower the learning rate (recipe {recipe.name!r} has lr={recipe.lr}) or check the data for NaN"
                )
            mean = sum(v * len(s.index) for v, s in zip(values, plan)) / sum(len(s.index) for s in plan)
            bar.set_postfix(epoch=plan[-1].epoch, loss=f"{mean:.3f}")
            if steps is None or plan[-1].step == steps - 1:
                model.eval()
                for cb in callbacks:
                    cb.on_epoch_end(model, plan[-1].epoch)
    finally:
        bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, data: ImageDataset, batch_size: int = 512,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for every item, in order (float32, on CPU). A model trained with a recipe's
    `test_flip` averages the logits of each image and its mirror (fit marks it), in fp32."""
    device = torch.device(device) if device else next(model.parameters()).device
    model.to(device).eval()
    check_compatible(model, data, device)
    flip = getattr(model, "test_flip", False)
    out = []
    for i in range(0, len(data), batch_size):
        x = data.images[i:i + batch_size].to(device).float().div_(255)
        logits = model(x).float()
        if flip:
            logits = (logits + model(x.flip(3)).float()) / 2
        out.append(logits.cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, data: ImageDataset, batch_size: int = 512,
             device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in [0, 1] of `model` on `data`."""
    logits = predict(model, data, batch_size, device)
    return (logits.argmax(1) == data.labels).float().mean().item()
