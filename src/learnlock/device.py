"""The one place that decides where learnlock computes.

A run's device is chosen once (`set_device("cuda:1")`, the CLI's `--device`; default "auto": the
first GPU when there is one) and read with `current_device()` by whatever creates tensors or
trains. Everything else follows the tensors it meets: a model, encoder, teacher, state or random
generator goes to the device of its inputs. The device is never part of a recipe, a manifest or
a cache key, so data protected on a GPU train on a CPU and caches do not split by device.

    with using("cpu"):
        model = fit(create_model("cnn", 10), data, recipe)
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch

from .errors import LearnlockError

_choice = "auto"


def parse(spec: str | torch.device | None) -> str:
    """A device spec, checked: auto, cpu, cuda or cuda:N."""
    text = "auto" if spec is None else str(spec)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise LearnlockError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def resolve(spec: str | torch.device | None = None) -> torch.device:
    """The torch.device of `spec` (default: the current choice); a clear error when this machine
    has no such device."""
    text = parse(_choice if spec is None else spec)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise LearnlockError(f"device {text} was asked for, but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s); use `device` cpu or auto")
    return device


def set_device(spec: str | torch.device | None) -> torch.device:
    """Choose the device of this process (checked now); returns it."""
    global _choice
    device = resolve(spec)
    _choice = parse(spec)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # also what "current device" means to torch (pinned memory, contexts)
    return device


def current_device() -> torch.device:
    return resolve(None)


@contextmanager
def using(spec: str | torch.device | None):
    """Compute on `spec` inside the block (a worker, a test), then restore the previous choice."""
    global _choice
    old = _choice
    set_device(spec)
    try:
        yield current_device()
    finally:
        _choice = old
