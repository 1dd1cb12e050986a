"""CIFAR-10 / CIFAR-100 (Krizhevsky 2009) from the standard python-pickle release.

`cifar10:DIR` points at `cifar-10-batches-py` (`cifar100:DIR` at `cifar-100-python`); without DIR
the archive is downloaded into the cache. The batches are pickles, so they are read with an
unpickler that can only rebuild numpy arrays: a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..errors import LearnlockError
from . import register_dataset
from .base import ImageDataset
from .download import cache_dir, download

RELEASES = {
    "cifar10": dict(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
        meta="batches.meta", names=b"label_names", labels=b"labels",
    ),
    "cifar100": dict(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=["train"], test=["test"],
        meta="meta", names=b"fine_label_names", labels=b"fine_labels",
    ),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    if not path.is_file():
        raise LearnlockError(f"CIFAR batch {path} is missing")
    try:
        with open(path, "rb") as f:
            out = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise LearnlockError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(out, dict):
        raise LearnlockError(f"{path}: not a CIFAR python batch (no dict inside)")
    return out


def fetch(name: str) -> Path:
    rel = RELEASES[name]
    root = cache_dir() / name
    if not (root / rel["folder"]).is_dir():
        archive = download(rel["url"], root / Path(rel["url"]).name, rel["md5"])
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return root / rel["folder"]


def load_cifar(name: str, arg, split, per_class=None, seed=0) -> ImageDataset:
    rel = RELEASES[name]
    root = Path(arg) if arg else fetch(name)
    if not root.is_dir():
        raise LearnlockError(f"{name}: folder {root} does not exist (expected {rel['folder']}/)")
    meta = read_batch(root / rel["meta"])
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(rel["names"], []))
    xs, ys = [], []
    for fname in rel[split]:
        batch = read_batch(root / fname)
        try:
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[rel["labels"]], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise LearnlockError(f"{root / fname}: malformed CIFAR batch ({e})") from None
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) != len(y):
        raise LearnlockError(f"{name}: {len(x)} images but {len(y)} labels in {root}")
    ds = ImageDataset(
        images=torch.from_numpy(x),
        labels=torch.from_numpy(y),
        classes=classes,
        ids=tuple(str(i) for i in range(len(y))),
        source=f"{name}:{split}",
    )
    return ds.per_class(per_class, seed) if per_class else ds


@register_dataset("cifar10")
def load_cifar10(arg, split, per_class=None, seed=0):
    return load_cifar("cifar10", arg, split, per_class, seed)


@register_dataset("cifar100")
def load_cifar100(arg, split, per_class=None, seed=0):
    return load_cifar("cifar100", arg, split, per_class, seed)
