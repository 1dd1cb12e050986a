"""One cell cache for every scenario and bench script.

A cell is a pure function of its inputs (dataset fingerprints, recipe, network, seed, attack and
protection settings). Its result is stored under a hash of those inputs and of the code version
(a hash of learnlock's own source files), written atomically, and found again by a rerun: a long
table is built in parts, a killed run resumes, and a result computed by other code is never
reused in silence (each cell also records its git commit and provenance).

    cache = CellCache("runs/cells")
    row = cache.run("train", cell_inputs(data=train, test=test, net="fastnet", seed=0, recipe=recipe),
                    lambda: train_and_test(...))

Tensors (a protected set's pixels, a trained network's weights) are cached as safetensors with
`run_tensors`. A cell is finished when its record (JSON) is there and reads whole: a temporary
file a killed write left, a lock file, or a tensors file without its record is not a result.

Inside `only_cached()` nothing is computed: a cell the cache lacks raises `NotCached` (a cell that
computes outside the cache calls `must_compute` first). That is how the slurm executor reads the
finished cells here and submits only the missing ones (learnlock.slurm).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from .data import ImageDataset
from .data.outdir import check_writable
from .device import current_device
from .errors import LearnlockError
from .files import atomic_write_bytes, atomic_write_json
from .provenance import provenance
from .recipe import Recipe


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 of every .py file of the installed learnlock package (path and bytes), short."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def cell_lock(path: Path):
    """An exclusive flock on the cell's lock file (released by the kernel if the process dies)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_only_cached = False


class NotCached(Exception):
    """A cell the cache does not hold, met inside `only_cached()` (nothing was computed)."""


@contextmanager
def only_cached():
    """Inside: every `CellCache.run` / `run_tensors` returns a finished cell or raises `NotCached`."""
    global _only_cached
    old, _only_cached = _only_cached, True
    try:
        yield
    finally:
        _only_cached = old


def must_compute(what: str = "a cell") -> None:
    """Call before computing anything outside a `CellCache`: raises `NotCached` inside `only_cached()`."""
    if _only_cached:
        raise NotCached(what)


def cell_inputs(**parts) -> dict:
    """A cell's inputs as its key records them: a dataset (`ImageDataset`) becomes its fingerprint
    (pixels, labels, ids), a key (`NetSpec`, `LockKey`) its fingerprint, a network (`nn.Module`)
    the fingerprint of its weights, a `Recipe` its `to_dict()` plus whether `fit` trains it in bf16
    on this run's device (bf16 and fp32 give other results; the device itself is never recorded),
    anything else stays as it is (JSON).

        cell_inputs(data=train, test=test, net="cnn", seed=0, recipe=recipe)
        # {"data": "9f..", "test": "4c..", "net": "cnn", "seed": 0, "recipe": {...}, "bf16": False}
    """
    out = {}
    for name, value in parts.items():
        if isinstance(value, ImageDataset):
            value = value.fingerprint()
        elif isinstance(value, Recipe):
            out["bf16" if name == "recipe" else f"{name}_bf16"] = value.uses_bf16(current_device())
            value = value.to_dict()
        elif hasattr(value, "fingerprint") and hasattr(value, "build"):  # a key
            value = value.fingerprint
        elif isinstance(value, torch.nn.Module):  # a trained network (a teacher): its weights
            value = weights_fingerprint(value.state_dict())
        out[name] = value
    return out


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 of each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_cache_dir(path, what: str = "cache") -> Path:
    """Refuse, before any work, a cache folder that is a file or cannot be written (a missing one is
    made on the first cell); `what` names the parameter in the message."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LearnlockError(f"{path} is not a folder; `{what}` is a folder of cached cells (made when missing); "
                             f"choose another `{what}`")
    return check_writable(path, what)


def _read_record(path: Path) -> dict | None:
    """A finished cell's record, or None (missing, or not whole: never trusted as a result)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "result" in record else None


def cell_key(kind: str, inputs: dict) -> str:
    text = json.dumps({"kind": kind, "inputs": inputs, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class CellCache:
    """Cells under `root`/<kind>/<key>.json (and .safetensors); `hits` and `computed` count this
    object's cells found and computed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = self.computed = 0

    def path(self, kind: str, inputs: dict, suffix: str = ".json") -> Path:
        return self.root / kind / f"{cell_key(kind, inputs)}{suffix}"

    def get(self, kind: str, inputs: dict) -> dict | None:
        """A stored cell's result (for run_tensors: the JSON record written beside), or None."""
        record = self.record(kind, inputs)
        return None if record is None else record["result"]

    def record(self, kind: str, inputs: dict) -> dict | None:
        """A finished cell's whole record (inputs, code version, commit, wall time, result), or None."""
        return _read_record(self.path(kind, inputs))

    def load_tensors(self, kind: str, inputs: dict) -> dict[str, torch.Tensor] | None:
        """A finished `run_tensors` cell's tensors, or None."""
        path = self.path(kind, inputs, ".safetensors")
        if self.record(kind, inputs) is None or not path.exists():
            return None
        return load_file(str(path))

    def run(self, kind: str, inputs: dict, compute: Callable[[], Any]) -> Any:
        """The cached result of this cell, or compute it, store it and return it. Two processes
        asking for the same cell compute it once (the second waits on a lock, then reads)."""
        path = self.path(kind, inputs)
        if _only_cached:  # read without the lock: a cell being computed elsewhere is not finished
            record = _read_record(path)
            if record is None:
                raise NotCached(f"{kind} cell {path.name}")
            self.hits += 1
            return record["result"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with cell_lock(path):
            record = _read_record(path)
            if record is not None:
                self.hits += 1
                return record["result"]
            start = time.perf_counter()
            result = compute()
            self.computed += 1
            atomic_write_json(path, {"kind": kind, "inputs": inputs, "code_version": code_version(),
                                     **provenance(), "wall_time_s": round(time.perf_counter() - start, 2),
                                     "date": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result})
        return result

    def run_tensors(self, kind: str, inputs: dict, compute: Callable[[], dict[str, torch.Tensor]],
                    meta: Callable[[], dict] | None = None) -> dict[str, torch.Tensor]:
        """As `run`, for a dict of tensors (safetensors file) plus a JSON record beside it, written
        last: the record is what says the cell is finished."""
        path = self.path(kind, inputs, ".safetensors")
        if _only_cached:
            found = self.load_tensors(kind, inputs)
            if found is None:
                raise NotCached(f"{kind} cell {path.name}")
            self.hits += 1
            return found
        path.parent.mkdir(parents=True, exist_ok=True)
        with cell_lock(path):
            found = self.load_tensors(kind, inputs)
            if found is not None:
                self.hits += 1
                return found
            start = time.perf_counter()
            tensors = {k: v.detach().contiguous().cpu() for k, v in compute().items()}
            self.computed += 1
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(tensors, str(tmp))
            atomic_write_bytes(path, tmp.read_bytes())
            tmp.unlink()
            atomic_write_json(path.with_suffix(".json"), {
                "kind": kind, "inputs": inputs, "code_version": code_version(), **provenance(),
                "wall_time_s": round(time.perf_counter() - start, 2), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "result": meta() if meta else None})
        return tensors
