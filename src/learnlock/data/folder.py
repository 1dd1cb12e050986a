"""Image-folder trees: `folder:PATH` with PATH/<class>/*.png|jpg|jpeg|bmp|webp, or
PATH/{train,test}/<class>/... where `split` picks the sub-tree. Class order is sorted names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import LearnlockError
from . import register_dataset
from .base import ImageDataset, per_class_index

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def split_root(path: Path, split: str) -> Path:
    if not path.exists():
        raise LearnlockError(f"folder dataset {path} does not exist")
    if not path.is_dir():
        raise LearnlockError(f"folder dataset {path} is not a folder")
    if (path / "train").is_dir() or (path / "test").is_dir():
        root = path / split
        if not root.is_dir():
            raise LearnlockError(f"{path} has split folders but no {split!r} folder ({root})")
        return root
    return path


def list_items(root: Path) -> tuple[list[str], list[Path], list[int]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise LearnlockError(f"{root} has no class folders; expected {root}/<class>/<image>.png")
    files, labels = [], []
    for c, name in enumerate(classes):
        found = sorted(
            p for p in (root / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise LearnlockError(
                f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        files += found
        labels += [c] * len(found)
    return classes, files, labels


SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def read_image(path: Path) -> np.ndarray:
    """H x W x C uint8 (C = 1 for grey modes, else 3); clear error for corrupt or truncated files.

    16-bit grey images (PNG) are scaled to 8 bits, v * 255 / 65535 rounded: Pillow's convert("L")
    clips them instead (every value above 255 becomes white). 16-bit colour PNGs Pillow already
    reads as 8-bit RGB (the high byte). 32-bit integer and float images other than a PNG's are
    refused: their range is unknown."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode in SIXTEEN_BIT or (im.mode == "I" and im.format == "PNG"):  # older Pillow: 16-bit PNG as "I"
                wide = np.asarray(im).astype(np.float64)
                arr = np.round(wide.clip(0, 65535) * (255 / 65535)).astype(np.uint8)
            elif im.mode in ("I", "F"):
                raise LearnlockError(f"{path}: a {im.mode} ({'32-bit integer' if im.mode == 'I' else 'float'}) image "
                                     "has no known range for 8-bit pixels; convert it to 8-bit (or 16-bit PNG) first")
            else:
                arr = np.asarray(im.convert("L" if im.mode in GREY_MODES else "RGB"), dtype=np.uint8)
    except LearnlockError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LearnlockError(f"{path}: corrupt or unreadable image ({e}); remove or replace it") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def stack_images(files: list[Path], root: Path) -> torch.Tensor:
    first = None
    out = None
    for i, p in enumerate(files):
        arr = read_image(p)
        if first is None:
            first = (p, arr.shape)
            out = np.empty((len(files),) + arr.shape, dtype=np.uint8)
        elif arr.shape[2] != first[1][2]:
            raise LearnlockError(
                f"mixed channel counts: {p.relative_to(root)} has {arr.shape[2]}, "
                f"{first[0].relative_to(root)} has {first[1][2]}; convert all images to RGB or all to grey"
            )
        elif arr.shape != first[1]:
            raise LearnlockError(
                f"mixed image sizes: {p.relative_to(root)} is {arr.shape[1]}x{arr.shape[0]}, "
                f"{first[0].relative_to(root)} is {first[1][1]}x{first[1][0]}; resize them to one size"
            )
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@register_dataset("folder")
def load_folder(arg, split, per_class=None, seed=0) -> ImageDataset:
    if not arg:
        raise LearnlockError("folder dataset needs a path: folder:PATH")
    path = Path(arg)
    root = split_root(path, split)
    classes, files, labels = list_items(root)
    if per_class:
        keep = per_class_index(labels, classes, per_class, seed, str(root)).tolist()
        files = [files[i] for i in keep]
        labels = [labels[i] for i in keep]
    return ImageDataset(
        images=stack_images(files, root),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=tuple(classes),
        ids=tuple(p.relative_to(root).as_posix() for p in files),
        source=f"folder:{path}:{split}",
    )
