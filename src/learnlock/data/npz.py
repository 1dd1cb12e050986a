"""`npz:PATH`: arrays `x` (N, H, W, C) or (N, H, W) uint8 and `y` (N,) integer labels, and
optionally `classes` (K,) strings. Loaded with allow_pickle=False (no code runs from the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import LearnlockError
from . import register_dataset
from .base import ImageDataset


@register_dataset("npz")
def load_npz(arg, split, per_class=None, seed=0) -> ImageDataset:
    if not arg:
        raise LearnlockError("npz dataset needs a path: npz:PATH")
    path = Path(arg)
    if not path.is_file():
        raise LearnlockError(f"npz dataset {path} does not exist")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # np.load would treat other bytes as a pickle
            raise LearnlockError(f"{path}: not a readable .npz file (not a zip archive); save with np.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        raise LearnlockError(f"{path}: cannot read npz without pickle ({e}); store plain arrays") from None
    except Exception as e:  # zipfile.BadZipFile, OSError, ...
        raise LearnlockError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise LearnlockError(f"{path}: missing array {key!r} (found {sorted(arrays)}); need x and y")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8:
        raise LearnlockError(
            f"{path}: field 'x' is {x.dtype}, must be uint8 in [0, 255]; "
            "convert with (x * 255).round().astype(np.uint8) if it is float in [0, 1]"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise LearnlockError(f"{path}: field 'x' has shape {x.shape}; expected (N, H, W, C) with C 1 or 3")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise LearnlockError(f"{path}: field 'y' must be 1-D integers, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise LearnlockError(f"{path}: {len(x)} images in 'x' but {len(y)} labels in 'y'")
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"].tolist())
    else:
        classes = tuple(str(c) for c in range(int(y.max()) + 1 if len(y) else 0))
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise LearnlockError(
            f"{path}: labels in 'y' span [{y.min()}, {y.max()}] but there are {len(classes)} classes"
        )
    ds = ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
        labels=torch.from_numpy(y.astype(np.int64)),
        classes=classes,
        ids=tuple(str(i) for i in range(len(y))),
        source=f"npz:{path}",
    )
    return ds.per_class(per_class, seed) if per_class else ds
