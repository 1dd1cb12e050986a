"""Fashion-MNIST (Xiao et al. 2017): 28x28 grey, 10 classes, 60k train / 10k test, IDX files.

Looked for in `fashion-mnist:DIR` if given, else in /usr/share/datasets/fashion-mnist (Debian
package `dataset-fashion-mnist`; skipped when LEARNLOCK_NO_SYSTEM_DATA=1, see `download.system_dir`),
else downloaded into the cache.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import LearnlockError
from . import register_dataset
from .base import ImageDataset
from .download import cache_dir, download, system_dir

CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the official .gz files (the Debian package recompresses them, so it is not checked).
FILES = {
    "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
              ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
    "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
             ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12e480ee83cd310")),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x0000 08 NDIM, NDIM big-endian uint32 sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise LearnlockError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LearnlockError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise LearnlockError(
            f"{path}: truncated IDX file ({len(raw) - offset} bytes of data, header says {count})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def download_fashion_mnist(dest: Path, base_url: str = URL, files=FILES) -> Path:
    for split in files.values():
        for name, md5 in split:
            download(base_url + name, dest / name, md5)
    return dest


def find_dir(arg: str | None) -> Path:
    if arg:
        d = Path(arg)
        if not d.is_dir():
            raise LearnlockError(f"fashion-mnist: folder {d} does not exist")
        return d
    system = system_dir(SYSTEM_DIR)
    if system is not None and (system / FILES["train"][0][0]).exists():
        return system
    return download_fashion_mnist(cache_dir() / "fashion-mnist")


@register_dataset("fashion-mnist")
def load_fashion_mnist(arg, split, per_class=None, seed=0) -> ImageDataset:
    root = find_dir(arg)
    (img_name, _), (lab_name, _) = FILES[split]
    paths = []
    for name in (img_name, lab_name):
        p = root / name
        if not p.exists() and (root / name[:-3]).exists():
            p = root / name[:-3]  # uncompressed copy
        if not p.exists():
            raise LearnlockError(f"fashion-mnist: {root / name} is missing")
        paths.append(p)
    x, y = read_idx(paths[0]), read_idx(paths[1])
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise LearnlockError(
            f"fashion-mnist: {paths[0].name} holds {x.shape}, {paths[1].name} holds {y.shape}; "
            "expected N x 28 x 28 images and N labels"
        )
    ds = ImageDataset(
        images=torch.from_numpy(x.copy()).unsqueeze(1),
        labels=torch.from_numpy(y.astype(np.int64)),
        classes=CLASSES,
        ids=tuple(str(i) for i in range(len(y))),
        source=f"fashion-mnist:{split}",
    )
    return ds.per_class(per_class, seed) if per_class else ds
