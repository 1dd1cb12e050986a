"""Fixed owner / aux / dev / test splits of an image-folder dataset (the 10k tier's protocol).

Per class, in sorted file order of the train split:
    owner  items 0-999      what the owner protects and publishes
    aux    items 1000-1999  clean data of the same kind the attacker may hold
    dev    items 2000-2199  every choice (defaults, epochs, a front's best point) is made here
and `test` is the whole test split, used only for frozen rows. The ranges never overlap, so no
image is both protected and held by the attacker, and nothing is chosen on test images.
`per_class` takes the first N items of a range (nested: the 1k tier's owner set is the first 100
per class of the 10k tier's).

    owner = load_split("folder:../shared/datasets/cifar10-jpg", "owner")            # 10,000 images
    aux = load_split("folder:../shared/datasets/cifar10-jpg", "aux", per_class=100)  # 1,000 images
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import LearnlockError
from . import load_dataset, parse_spec
from .base import ImageDataset
from .folder import list_items, split_root, stack_images

RANGES = {"owner": (0, 1000), "aux": (1000, 2000), "dev": (2000, 2200)}
SPLIT_NAMES = tuple(RANGES) + ("test",)


def split_index(labels: list[int], num_classes: int, split: str, per_class: int | None = None) -> list[int]:
    """Positions (in file order) of `split`'s items: the range's first `per_class` per class."""
    lo, hi = RANGES[split]
    if per_class is not None:
        if not 1 <= per_class <= hi - lo:
            raise LearnlockError(f"split {split!r} holds {hi - lo} images per class; per_class must be in "
                                 f"[1, {hi - lo}], got {per_class}")
        hi = lo + per_class
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, c in enumerate(labels):
        by_class[c].append(i)
    out = []
    for c, items in enumerate(by_class):
        if len(items) < hi:
            raise LearnlockError(f"class {c} has {len(items)} training images; split {split!r} needs {hi}")
        out += items[lo:hi]
    return sorted(out)


def load_split(spec: str, split: str, per_class: int | None = None) -> ImageDataset:
    """One split of a `folder:PATH` dataset with train/ and test/, or of a registered dataset such as
    `fashion-mnist` (its train split in file order; see the module docstring)."""
    if split not in SPLIT_NAMES:
        raise LearnlockError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    name, arg = parse_spec(spec)
    if split == "test":
        return load_dataset(spec, "test", per_class=per_class)
    if name != "folder":  # a registered dataset (fashion-mnist, cifar10): its train split in file order
        full = load_dataset(spec, "train")
        keep = split_index(full.labels.tolist(), full.num_classes, split, per_class)
        out = full.subset(keep)
        return ImageDataset(images=out.images, labels=out.labels, classes=out.classes, ids=out.ids,
                            source=f"{spec}:{split}")
    if not arg:
        raise LearnlockError(f"fixed splits need an image folder with train/ and test/ (folder:PATH), got {spec!r}")
    path = Path(arg)
    root = split_root(path, "train")
    classes, files, labels = list_items(root)
    keep = split_index(labels, len(classes), split, per_class)
    files = [files[i] for i in keep]
    return ImageDataset(images=stack_images(files, root), labels=torch.tensor([labels[i] for i in keep]),
                        classes=tuple(classes), ids=tuple(p.relative_to(root).as_posix() for p in files),
                        source=f"folder:{path}:{split}")
