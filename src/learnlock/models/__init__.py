"""CIFAR-style image classifiers by name, and NetSpec (architecture + initial weights).

Every model takes float images in [0, 1], B x C x H x W with C in (1, 3) and H = W = 28 or 32
(other sizes work too: each net ends in adaptive average pooling), and returns B x num_classes
logits. There is no input normalisation layer.

    model = create_model("resnet18", num_classes=10, in_channels=3, seed=0)
    logits = model(torch.rand(8, 3, 32, 32))   # 8 x 10

Add an architecture by writing one file here with a constructor
`(num_classes, in_channels=3, **kwargs) -> nn.Module` decorated with `@register_model("name")`,
and importing it at the bottom of this file.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..errors import LearnlockError
from ..registry import Registry

MODELS = Registry("model", fixed=("num_classes", "in_channels"))  # the rest of a constructor's arguments are settings
register_model = MODELS.register
list_models = MODELS.names  # names accepted by create_model, sorted


@contextmanager
def frozen(model: nn.Module):
    """Inside, only inputs get gradients: the parameters stop requiring grad (restored on exit).
    Noise, transforms and adversarial examples optimise against a fixed model this way."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def check_args(name: str, num_classes: int, in_channels: int, kwargs: dict) -> None:
    """Raise LearnlockError unless create_model(name, num_classes, in_channels, **kwargs) is ok."""
    MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise LearnlockError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if type(in_channels) is not int or in_channels not in (1, 3):  # rejects True and 3.0
        raise LearnlockError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    MODELS.check(name, kwargs)


def create_model(name: str, num_classes: int, in_channels: int = 3, seed: int | None = None,
                 **kwargs) -> nn.Module:
    """Build a registered architecture, in train mode.

    With `seed`, the model is built on CPU, its weights depend only on (name, num_classes,
    in_channels, kwargs, seed) and the global torch RNG is left as it was. With seed=None, the
    global RNG is used (and advanced) and the current default device applies.
    """
    check_args(name, num_classes, in_channels, kwargs)
    ctor = MODELS.get(name)
    if seed is None:
        return ctor(num_classes, in_channels, **kwargs)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LearnlockError(f"seed must be an integer or None, got {seed!r}")
    # Built on CPU (even under a default-device override), so only the CPU generator is forked;
    # torch.manual_seed would also (lazily) reseed CUDA generators outside the fork.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(seed)
        return ctor(num_classes, in_channels, **kwargs)


# Imported for their @register_model side effect; keep last.
from . import cnn, fastnet, lenet, mobilenetv2, resnet, shufflenetv2, vgg  # noqa: E402,F401  ("keyed": learnlock.keys)
from .netspec import NetSpec  # noqa: E402

__all__ = ["MODELS", "NetSpec", "check_args", "create_model", "list_models", "register_model"]
