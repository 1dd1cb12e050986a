"""Datasets by spec string: `load_dataset("folder:PATH", split="train", per_class=100)`.

Specs: `fashion-mnist[:DIR]`, `cifar10[:DIR]`, `cifar100[:DIR]`, `folder:PATH`, `npz:PATH`.
Every loader returns an `ImageDataset` (uint8 N x C x H x W, int64 labels, class names, ids).
"""

from __future__ import annotations

from ..errors import LearnlockError
from ..registry import Registry
from .base import ImageDataset

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

SPLITS = ("train", "test")
# the fixed owner / aux / dev ranges of the train split (learnlock.data.splits): the 10k tier's protocol
FIXED_SPLITS = ("owner", "aux", "dev")


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep else None)


def load_dataset(
    spec: str, split: str = "train", per_class: int | None = None, seed: int = 0
) -> ImageDataset:
    """Load `spec` (see module docstring); `per_class` keeps a seeded subset of N items per class.
    `split` owner, aux or dev is a fixed range of the train split (learnlock.data.splits): there
    `per_class` takes the range's first N items, and `seed` is not used."""
    if split not in SPLITS + FIXED_SPLITS:
        raise LearnlockError(f"split must be one of {SPLITS + FIXED_SPLITS}, got {split!r}")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise LearnlockError(f"per_class is a number of images per class >= 1 (leave it out for all), got {per_class!r}")
    if split in FIXED_SPLITS:
        from .splits import load_split  # splits builds on this module

        return load_split(spec, split, per_class=per_class)
    name, arg = parse_spec(spec)
    loader = DATASETS.get(name)
    return loader(arg, split, per_class=per_class, seed=seed)


def list_datasets() -> list[str]:
    return DATASETS.names()


# Loaders register themselves on import.
from . import cifar, fashion_mnist, folder, npz  # noqa: E402,F401
from . import published  # noqa

__all__ = ["ImageDataset", "load_dataset", "list_datasets", "register_dataset", "DATASETS"]
