"""The in-memory dataset every part of learnlock passes around."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LearnlockError


@dataclass(frozen=True)
class ImageDataset:
    """Images as uint8 N x C x H x W, int64 labels in [0, num_classes), one stable id per item.

    `ids` are relative paths (folder datasets) or indices (array datasets), so a protected copy
    can be matched back to its source item. `source` is the spec it was loaded from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    source: str = ""

    def __post_init__(self):
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise LearnlockError(
                f"{self.source or 'dataset'}: images must be uint8 N x C x H x W, "
                f"got {x.dtype} with shape {tuple(x.shape)}"
            )
        if x.shape[1] not in (1, 3):
            raise LearnlockError(
                f"{self.source or 'dataset'}: images must have 1 or 3 channels, got {x.shape[1]}"
            )
        if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
            raise LearnlockError(
                f"{self.source or 'dataset'}: labels must be int64 of length {len(x)}, "
                f"got {y.dtype} with shape {tuple(y.shape)}"
            )
        if len(self.ids) != len(x):
            raise LearnlockError(f"{self.source or 'dataset'}: {len(self.ids)} ids for {len(x)} images")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise LearnlockError(
                f"{self.source or 'dataset'}: labels must lie in [0, {len(self.classes) - 1}] "
                f"for {len(self.classes)} classes, got range [{int(y.min())}, {int(y.max())}]"
            )

    def fingerprint(self) -> str:
        """sha256 of shape, pixels, labels and ids: equal fingerprints train (and cache) the same."""
        import hashlib

        h = hashlib.sha256(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.contiguous().numpy().tobytes())
        h.update("\n".join(map(str, self.ids)).encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def float_images(self) -> torch.Tensor:
        """Images in [0, 1] as float32 (the pixel scale every protection radius uses)."""
        return self.images.float().div_(255)

    def subset(self, index) -> "ImageDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
            ids=tuple(self.ids[i] for i in index.tolist()),
            source=self.source,
        )

    def per_class(self, n: int, seed: int = 0) -> "ImageDataset":
        """A seeded subset of n items per class, kept in the original item order."""
        return self.subset(per_class_index(self.labels, self.classes, n, seed, self.source))

    def with_images(self, images: torch.Tensor, source: str | None = None) -> "ImageDataset":
        """Same items and labels, new pixels (a protected or attacked copy)."""
        if images.shape != self.images.shape:
            raise LearnlockError(
                f"new images have shape {tuple(images.shape)}, expected {tuple(self.images.shape)}"
            )
        return ImageDataset(images, self.labels, self.classes, self.ids, source or self.source)


def check_test_set(train: ImageDataset, test: ImageDataset, tolerance: float = 0.0) -> None:
    """Refuse a test set that names other classes than the training set, has another image size or
    channel count, or that is the training
    images again (a folder without train/ and test/ subfolders gives the same images for both
    splits): most test items share an id with a training item and match its pixels up to a mean
    absolute difference of `tolerance` grey levels (the protection's budget, for published data).
    Datasets whose splits reuse ids for other images (cifar10's "17") pass."""
    if tuple(test.classes) != tuple(train.classes):
        raise LearnlockError(f"test set {test.source} has classes {list(test.classes)[:5]}..., the training data "
                             f"{list(train.classes)[:5]}...; give a `test` set with the same class names in the same order")
    if tuple(test.images.shape[1:]) != tuple(train.images.shape[1:]):  # a net with global pooling would still run
        c, h, w = test.images.shape[1:]
        c0, h0, w0 = train.images.shape[1:]
        raise LearnlockError(f"test set {test.source} has {c}-channel {w}x{h} images, the training data {train.source} "
                             f"{c0}-channel {w0}x{h0}; accuracies across image sizes mean nothing; give a `test` set "
                             "of the training images' size")
    where = {item: i for i, item in enumerate(train.ids)}
    shared = [(where[item], j) for j, item in enumerate(test.ids) if item in where]
    if len(shared) < len(test) / 2:
        return
    same = sum(bool((train.images[i].float() - test.images[j].float()).abs().mean() <= tolerance) for i, j in shared)
    if same >= 0.9 * len(shared):
        raise LearnlockError(f"test set {test.source} shares {same} of its {len(test)} images with the training data "
                             f"{train.source} (a dataset without a test split, such as a folder without train/ and test/, gives its training "
                             "images again); "
                             "give a separate `test` set")


def per_class_index(labels, classes, n: int, seed: int = 0, source: str = "") -> torch.Tensor:
    """Sorted indices of a seeded choice of n items per class (folders use it before decoding)."""
    if n <= 0:
        raise LearnlockError(f"per_class must be a positive count, got {n}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c, name in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < n:
            raise LearnlockError(
                f"{source or 'dataset'}: class {name!r} has {len(idx)} items, fewer than per_class={n}"
            )
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values
