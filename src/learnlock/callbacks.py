"""Callbacks of `fit` that protections use: per-item soft targets that follow fit's exact batches,
and a trajectory of checkpoints (UGE's gradient matching)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .files import atomic_write_bytes
from .training import Callback, batch_schedule


class ItemTargets(Callback):
    """Trains on per-item targets instead of the labels: `targets[i]` (N x C class probabilities,
    e.g. a teacher's soft outputs) for item i of the data `fit` receives. It finds each step's items
    by replaying `batch_schedule`, so the targets follow the exact batches fit draws."""

    def __init__(self, targets: torch.Tensor):
        self.targets = targets
        self.index: dict[int, torch.Tensor] = {}

    def on_fit_start(self, model, recipe):
        dev = next(model.parameters()).device  # fit has moved the model: targets and indices go there once
        self.targets = self.targets.to(dev)
        self.index = {s.step: s.index.to(dev) for s in batch_schedule(len(self.targets), recipe)}

    def on_batch(self, model, x, y, step):
        return x, self.targets[self.index[step]]


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Trajectory(Callback):
    """Keeps checkpoints theta_0 (init) .. theta_T, e.g. for UGE's gradient matching: after every
    `every` epochs, or with `every_steps`, before every k-th optimiser step (finer). `steps[i]`
    is the number of optimiser steps taken before checkpoint i. With `directory`, each is also
    written as step_XXXXXX.safetensors."""

    def __init__(self, every: int = 1, every_steps: int | None = None,
                 directory: str | Path | None = None):
        self.every = every
        self.every_steps = every_steps
        self.directory = Path(directory) if directory else None
        self.states: list[dict[str, torch.Tensor]] = []
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self._step = 0

    def _keep(self, model, epoch):
        if self.steps and self.steps[-1] == self._step:
            return
        state = state_copy(model)
        self.states.append(state)
        self.steps.append(self._step)
        self.epochs.append(epoch)
        if self.directory is not None:
            from safetensors.torch import save

            atomic_write_bytes(self.directory / f"step_{self._step:06d}.safetensors",
                               save({k: v.contiguous() for k, v in state.items()}))

    def on_fit_start(self, model, recipe):
        self._step, self._epoch = 0, 0
        self._keep(model, 0)

    def on_batch(self, model, x, y, step):
        self._step = step
        if self.every_steps and step % self.every_steps == 0:
            self._keep(model, self._epoch)
        return x, y

    def on_epoch_end(self, model, epoch):
        self._step += 1  # on_batch saw the last step before it was taken
        self._epoch = epoch
        if epoch % self.every == 0:
            self._keep(model, epoch)
