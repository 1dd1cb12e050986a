"""Independent cells of a scenario, run here one after another or in worker processes (`jobs`).

    with Workers(jobs=4, shared={"train": train, "test": test, "recipe": recipe}) as pool:
        rows = pool.map(train_cell, [(net, seed) for net in nets for seed in seeds], on_done=log)

A cell is `fn(shared, *args)`: a module-level function (a worker imports it by name; no lambdas),
`shared` what every cell reads (datasets, a recipe, a teacher), sent once to each worker, and
`args` the cell's own (net, seed, ...). `map` returns the results in the order of its calls,
whatever order the cells finish in, and calls `on_done(i, result)` here as each one finishes. A
cell that caches itself (the audit's cells/, evaluate's results.json) writes from the worker as
soon as it finishes, so a killed run keeps every finished cell.

jobs == 1 runs every cell in this process, in order (the serial path). jobs > 1 spawns up to
`jobs` workers ("spawn": CUDA cannot be forked). When this process computes on a GPU (device
auto or cuda), worker i computes on cuda:(i mod the number of visible GPUs) (CUDA_VISIBLE_DEVICES
chooses them; an explicit cuda:N keeps every worker on N); otherwise on the CPU.

Threads: every worker uses this process's torch thread count. Float sums (convolutions, matrix
products) then run in the same order as here, so on a CPU each cell's result is byte-identical to
the serial run (another thread count changes the summation order, see `provenance`; GPU runs are
never bit for bit). On a CPU machine
N workers of T threads each oversubscribe the cores: to use --jobs there, lower the thread count
of the run (OMP_NUM_THREADS or torch.set_num_threads before it), and compare runs made at the same
thread count. On GPUs the CPU threads matter little.

Modules and tensors cross between processes on the CPU (`to_cpu` in the sender, `arrive` in the
receiving cell, a no-op in the serial path), as plain pickles: each worker holds its own copy of
`shared`, and nothing goes through shared memory (a container's /dev/shm is often too small for
a dataset). If a cell fails, the cells already running finish (and cache themselves), the rest are
cancelled and the error is raised here.
"""

from __future__ import annotations

import copy
import fcntl
import os
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Sequence

import torch

from .device import current_device, set_device
from .errors import require

_shared: Any = None      # in a worker: the `shared` its pool was started with
_worker: str | None = None   # in a worker: the device it computes on; None in the parent


def worker_devices() -> list[str]:
    """The devices workers take in turn: every visible GPU when this process computes on "cuda"
    (or auto on a GPU machine), the one GPU asked for with cuda:N, else the CPU."""
    here = current_device()
    if here.type != "cuda":
        return ["cpu"]
    if here.index is not None:
        return [str(here)]
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (a killed audit: SIGKILL leaves the pool no chance to stop it)
    exits instead of training on as an orphan that holds the CPUs or a GPU."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init(shared: bytes, counter, devices: list[str], threads: int) -> None:
    global _shared, _worker
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _worker = devices[index % len(devices)]
    set_device(_worker)
    if _worker.startswith("cuda"):
        torch.cuda.set_device(torch.device(_worker))  # "cuda" without an index means this one too
    torch.set_num_threads(threads)
    _shared = pickle.loads(shared)


def _call(fn: Callable, args: bytes) -> bytes:
    return _dumps(to_cpu(fn(_shared, *pickle.loads(args))))


def _dumps(obj) -> bytes:
    """A plain pickle: tensors travel as bytes (torch's own reducers would use shared memory)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def to_cpu(obj):
    """`obj` with every module and tensor in it (nested in tuples, lists and dicts) on the CPU; a
    module or tensor on another device is copied, never moved in place."""
    if isinstance(obj, torch.nn.Module):
        on_cpu = all(t.device.type == "cpu" for t in [*obj.parameters(), *obj.buffers()])
        return obj if on_cpu else copy.deepcopy(obj).cpu()
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    return obj


def arrive(module):
    """A module a cell received: in a worker, moved to the worker's device (it travelled on the
    CPU); in the serial path, unchanged."""
    return module.to(current_device()) if _worker is not None and module is not None else module


class Workers:
    """`jobs` worker processes sharing `shared` (or this process when jobs == 1); a context
    manager, so the workers are started once for several rounds of `map`."""

    def __init__(self, jobs: int = 1, shared: Any = None):
        require(isinstance(jobs, int) and jobs >= 1, f"`jobs` must be a whole number >= 1, got {jobs!r}")
        self.jobs, self.shared, self.pool = jobs, shared, None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _start(self) -> ProcessPoolExecutor:
        if self.pool is None:
            ctx = torch.multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                self.jobs, mp_context=ctx, initializer=_init,
                initargs=(_dumps(to_cpu(self.shared)), ctx.Value("i", 0), worker_devices(), torch.get_num_threads()))
        return self.pool

    def map(self, fn: Callable, calls: Sequence[tuple], on_done: Callable[[int, Any], None] | None = None) -> list:
        """[fn(shared, *args) for args in calls], in that order; on_done(i, result) as each finishes."""
        calls = [tuple(c) for c in calls]
        results: list = [None] * len(calls)
        if self.jobs == 1:
            for i, args in enumerate(calls):
                results[i] = fn(self.shared, *args)
                if on_done:
                    on_done(i, results[i])
            return results
        if not calls:
            return results
        pool = self._start()
        pending = {pool.submit(_call, fn, _dumps(to_cpu(args))): i for i, args in enumerate(calls)}
        try:
            for future in as_completed(pending):
                i = pending[future]
                results[i] = pickle.loads(future.result())  # raises the cell's error
                if on_done:
                    on_done(i, results[i])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running cells finish and cache themselves
            self.pool = None
            raise
        return results


@contextmanager
def locked(folder):
    """An exclusive lock on `folder` (flock on the directory itself: no lock file is left), for a
    read-modify-write of a file several workers update (evaluate's results.json)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
