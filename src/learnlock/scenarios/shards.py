"""Federated learning's data: shares of one training set among clients (split_shards), their
union (concat) and Table 9's accuracy by class half (group_accuracy)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..data import ImageDataset
from ..errors import LearnlockError

SPLITS = ("classes", "iid", "dirichlet")


def parse_split(text: str) -> tuple[str, float | None]:
    """'classes', 'iid' or 'dirichlet:ALPHA' (ALPHA > 0; small = each client sees few classes)."""
    kind, _, arg = text.partition(":")
    if kind not in SPLITS:
        raise LearnlockError(f"unknown split {text!r}; use classes, iid or dirichlet:ALPHA (e.g. dirichlet:0.5)")
    if kind != "dirichlet":
        if arg:
            raise LearnlockError(f"split {kind} takes no parameter, got {text!r}")
        return kind, None
    try:
        alpha = float(arg)
    except ValueError:
        raise LearnlockError(f"dirichlet split needs a concentration: dirichlet:ALPHA, e.g. dirichlet:0.5; "
                             f"got {text!r}") from None
    if not math.isfinite(alpha) or alpha <= 0:
        raise LearnlockError(f"dirichlet concentration must be a finite number > 0, got {alpha}")
    return kind, alpha


def split_shards(labels: torch.Tensor, num_classes: int, clients: int, split: str,
                 seed: int = 0) -> list[torch.Tensor]:
    """A partition of range(len(labels)) into `clients` sorted, non-empty index tensors.

    classes: client k holds whole classes [k C / N, (k + 1) C / N) (2 clients: the two halves);
    iid: a seeded shuffle cut into near-equal parts;
    dirichlet:ALPHA: per class, client shares drawn from Dirichlet(ALPHA) (Hsu et al. 2019)."""
    n = len(labels)
    if not isinstance(clients, int) or clients < 1:
        raise LearnlockError(f"clients must be a positive count, got {clients!r}")
    if clients > n:
        raise LearnlockError(f"{clients} clients for {n} items: every client needs at least one item")
    kind, alpha = parse_split(split)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if kind == "classes":
        present = sorted(set(labels.tolist()))
        if clients > len(present):
            raise LearnlockError(f"a class split needs at most one client per class: {clients} clients, "
                                 f"{len(present)} classes; use iid or dirichlet:ALPHA")
        owner = torch.tensor([c * clients // num_classes for c in range(num_classes)])
        shards = [torch.nonzero(owner[labels] == k).flatten() for k in range(clients)]
    elif kind == "iid":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        shards = [p.sort().values for p in torch.tensor_split(perm, clients)]
    else:
        rng = np.random.default_rng(seed)
        for _ in range(100):  # redraw until no client is empty (only likely for tiny data)
            parts = [[] for _ in range(clients)]
            for c in range(num_classes):
                idx = torch.nonzero(labels == c).flatten().numpy()
                rng.shuffle(idx)
                cuts = (np.cumsum(rng.dirichlet([alpha] * clients))[:-1] * len(idx)).astype(int)
                for k, piece in enumerate(np.split(idx, cuts)):
                    parts[k].extend(piece.tolist())
            if all(parts):
                break
        else:
            raise LearnlockError(f"dirichlet:{alpha} left a client empty in 100 draws for {n} items; "
                                 "use fewer clients or a larger ALPHA")
        shards = [torch.tensor(sorted(p), dtype=torch.long) for p in parts]
    empty = [k for k, s in enumerate(shards) if len(s) == 0]
    if empty:
        raise LearnlockError(f"the {split} split leaves client(s) {empty} without data; use fewer clients")
    return shards


def concat(parts: Sequence[ImageDataset], source: str = "") -> ImageDataset:
    """The union of datasets with the same classes and image shape, in order."""
    if not parts:
        raise LearnlockError("nothing to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if p.classes != first.classes or p.images.shape[1:] != first.images.shape[1:]:
            raise LearnlockError(f"{p.source} does not match {first.source} (classes or image shape differ)")
    return ImageDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                        first.classes, tuple(i for p in parts for i in p.ids), source or first.source)


def group_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy on the first-half classes [0, ceil(C/2)), the second half, and all (Table 9's columns)."""
    hit = (logits.argmax(1) == labels).float()
    first = labels < (num_classes + 1) // 2
    out = {"first": hit[first].mean().item() if first.any() else float("nan"),
           "second": hit[~first].mean().item() if (~first).any() else float("nan"),
           "all": hit.mean().item()}
    return out


__all__ = ["SPLITS", "concat", "group_accuracy", "parse_split", "split_shards"]
