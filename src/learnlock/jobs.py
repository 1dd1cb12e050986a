"""Independent cells of a scenario, run here one after another, in worker processes (`jobs`), or on
a SLURM cluster (`executor`, learnlock.slurm).

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

executor="slurm" (or a `learnlock.slurm.Slurm` with its settings) sends the cells to a SLURM
cluster instead, one job of a job array per cell (`jobs` is not used there: `Slurm.max_running`
caps the cells at once); Workers then needs `folder` (on the shared filesystem) and submitit.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Sequence

import torch

from .device import current_device
from .errors import require
from .worker import arrive, start_worker, to_cpu  # noqa: F401 (the cells' helpers, from here as before)

_shared: Any = None      # in a worker: the `shared` its pool was started with


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
    global _shared
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    start_worker(devices[index % len(devices)], threads)
    _shared = pickle.loads(shared)


def _call(fn: Callable, args: bytes) -> bytes:
    return _dumps(to_cpu(fn(_shared, *pickle.loads(args))))


def _dumps(obj) -> bytes:
    """A plain pickle: tensors travel as bytes (torch's own reducers would use shared memory)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def check_executor(executor):
    """"local", or the `Slurm` settings of executor "slurm" (or the `Slurm` given), checked: submitit
    is installed, the cells would compute on the kind of device this process computes on, and this
    machine can submit to SLURM."""
    from .slurm import Slurm, require_submitit

    if isinstance(executor, str) and executor in ("local", "slurm"):
        executor = "local" if executor == "local" else Slurm()
    require(executor == "local" or isinstance(executor, Slurm),
            f"`executor` must be local or slurm (or a learnlock.slurm.Slurm), got {executor!r}")
    if isinstance(executor, Slurm):
        require_submitit()
        executor.check_device(current_device())
        executor.check_here()
    return executor


def runs_here(jobs: int, executor="local") -> bool:
    """Whether the cells run in this process, one after another (jobs == 1 on the local executor):
    then progress bars show and modules stay where they are."""
    return jobs == 1 and executor == "local"


class Workers:
    """`jobs` worker processes sharing `shared` (or this process when jobs == 1), or with `executor`
    slurm the jobs of a SLURM cluster (`folder`: theirs, on the shared filesystem); a context
    manager, so the workers are started once for several rounds of `map`."""

    def __init__(self, jobs: int = 1, shared: Any = None, executor="local", folder=None):
        require(isinstance(jobs, int) and jobs >= 1, f"`jobs` must be a whole number >= 1, got {jobs!r}")
        self.jobs, self.shared, self.pool, self.cluster = jobs, shared, None, None
        executor = check_executor(executor)
        if executor != "local":
            from .slurm import Cells

            self.cluster = Cells(executor, shared, folder)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.cluster is not None:
            self.cluster.close()

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
        if self.cluster is not None:
            return self.cluster.map(fn, calls, on_done)
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
