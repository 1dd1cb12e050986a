"""One cell cache for every scenario and bench script.

A cell is a pure function of its inputs (dataset fingerprints, recipe, network, seed, attack and
protection settings). Its result is stored under a hash of those inputs and of the code version
(a hash of learnlock's own source files), written atomically, and found again by a rerun: a long
table is built in parts, a killed run resumes, and a result computed by other code is never
reused in silence (each cell also records its git commit and provenance).

    cache = CellCache("runs/cells")
    row = cache.run("train", {"data": train.fingerprint(), "net": "fastnet", "seed": 0,
                              "recipe": recipe.to_dict()}, lambda: train_and_test(...))

Tensors (a protected set's pixels) are cached beside as safetensors with `run_tensors`.
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

from .provenance import atomic_write_bytes, atomic_write_json, provenance


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


def cell_key(kind: str, inputs: dict) -> str:
    text = json.dumps({"kind": kind, "inputs": inputs, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class CellCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, inputs: dict, suffix: str = ".json") -> Path:
        return self.root / kind / f"{cell_key(kind, inputs)}{suffix}"

    def get(self, kind: str, inputs: dict) -> dict | None:
        """A stored cell's result (for run_tensors: the JSON record written beside), or None."""
        path = self.path(kind, inputs)
        if not path.exists():
            return None
        return json.loads(path.read_text())["result"]

    def run(self, kind: str, inputs: dict, compute: Callable[[], Any]) -> Any:
        """The cached result of this cell, or compute it, store it and return it. Two processes
        asking for the same cell compute it once (the second waits on a lock, then reads)."""
        path = self.path(kind, inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        with cell_lock(path):
            if path.exists():
                return json.loads(path.read_text())["result"]
            start = time.perf_counter()
            result = compute()
            atomic_write_json(path, {"kind": kind, "inputs": inputs, "code_version": code_version(),
                                     **provenance(), "wall_time_s": round(time.perf_counter() - start, 2),
                                     "date": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result})
        return result

    def run_tensors(self, kind: str, inputs: dict, compute: Callable[[], dict[str, torch.Tensor]],
                    meta: Callable[[], dict] | None = None) -> dict[str, torch.Tensor]:
        """As `run`, for a dict of tensors (safetensors file) plus a JSON record beside it."""
        path = self.path(kind, inputs, ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        with cell_lock(path):
            if path.exists():
                return load_file(str(path))
            start = time.perf_counter()
            tensors = {k: v.contiguous().cpu() for k, v in compute().items()}
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(tensors, str(tmp))
            atomic_write_bytes(path, tmp.read_bytes())
            tmp.unlink()
            atomic_write_json(path.with_suffix(".json"), {
                "kind": kind, "inputs": inputs, "code_version": code_version(), **provenance(),
                "wall_time_s": round(time.perf_counter() - start, 2), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "result": meta() if meta else None})
        return tensors
