"""Cells on a SLURM cluster, through submitit: one job of a job array per cell.

    with Workers(shared=shared, executor=Slurm(partition="gpu", time_min=120), folder=out / "slurm") as pool:
        rows = pool.map(train_cell, calls, on_done=log)

`Workers` (learnlock.jobs) hands its `map` here when its executor is a `Slurm`. Then:
1. every cell the cell cache already holds is read here (`cells.only_cached`: nothing is computed)
   and never submitted, so a rerun submits only the missing cells;
2. `shared` is written once, atomically, to FOLDER/shared-<id>.pkl on the shared filesystem, and
   each job reads it there (FOLDER: `Slurm.folder`, default the scenario's OUT/slurm);
3. the missing cells go to SLURM as one job array (submitit's `map_array`): one job per cell, with
   `gpus` GPUs (default 1), `time_min` minutes and `mem_gb`, at most `max_running` at once. Each
   job computes on its GPU (on its CPUs with gpus=0), caches its cell as it finishes, and returns
   the result; its logs are FOLDER/<job id>/;
4. `on_done(i, result)` is called here as jobs finish. A failed job (an error, or killed: out of
   time, out of memory, cancelled) lets the others finish and cache themselves, then raises one
   LearnlockError naming its log files; the rerun submits only what is missing.

The cells' cache keys are made in this process, on its device (`Recipe.uses_bf16`), so the jobs
compute on the same kind of device: a command run on the CPU sends CPU cells (gpus=0), one run on
a GPU sends GPU cells. Run the command itself on a GPU node (`srun --gpus 1 learnlock audit ...`):
there it also computes the shared inputs (the authorized network, an attack's transform) once.

The nodes must see FOLDER and the cell cache at the same paths, run the same Python environment (the
jobs start this interpreter, `sys.executable`) and the same learnlock code (checked: a job on other
code fails), and the filesystem must give flock and atomic rename (the cell cache's guarantees).
`cluster="local"` runs the jobs as subprocesses of this machine (submitit's local executor, no SLURM
needed): how the tests run this path.

Needs submitit: pip install learnlock[slurm].
"""

from __future__ import annotations

import os
import pickle
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .cells import NotCached, code_version, only_cached
from .errors import LearnlockError, require
from .files import atomic_write_bytes
from .worker import start_worker, to_cpu


@dataclass(frozen=True)
class Slurm:
    """How cells run on a SLURM cluster (each cell is one job of a job array)."""

    partition: str | None = None  # SLURM partition; None: the cluster's default
    gpus: int = 1                 # GPUs per cell; 0: the cells compute on CPUs
    cpus: int | None = None       # CPU cores per cell (torch threads in the job); None: the cluster's default
    time_min: int = 240           # wall-clock limit per cell, minutes
    mem_gb: float | None = None   # memory per cell, GB; None: the cluster's default
    max_running: int | None = None  # cells running at once; None: as many as the cluster grants
    params: dict = field(default_factory=dict)  # any other submitit parameter: slurm_account, slurm_qos, slurm_setup, ...
    folder: str | Path | None = None  # shared inputs, job pickles and logs; None: the scenario's OUT/slurm
    cluster: str = "slurm"        # "local": jobs as subprocesses here (submitit's local executor; tests)

    def __post_init__(self):
        require(self.cluster in ("slurm", "local"), f"`cluster` is slurm or local, got {self.cluster!r}")
        require(isinstance(self.gpus, int) and self.gpus >= 0, f"`gpus` (per cell) must be a whole number >= 0, "
                f"got {self.gpus!r}")
        for name in ("cpus", "time_min", "max_running"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, int) and value >= 1),
                    f"`{name}` must be a whole number >= 1, got {value!r}")
        require(self.time_min is not None, "`time_min` (minutes per cell) must be given")
        require(self.mem_gb is None or self.mem_gb > 0, f"`mem_gb` must be > 0, got {self.mem_gb!r}")
        bad = [k for k in self.params if not (isinstance(k, str) and k.startswith(("slurm_", "local_")))]
        require(not bad, f"`params` are submitit's parameters of the cluster by name, slurm_... (e.g. slurm_account=abc, "
                f"slurm_qos=high, slurm_constraint=a100, slurm_setup=[\"module load cuda\"]); got {bad}")

    def parameters(self) -> dict:
        """The submitit `update_parameters` of each cell's job."""
        named = {"timeout_min": self.time_min, "gpus_per_node": self.gpus, "tasks_per_node": 1, "nodes": 1,
                 "cpus_per_task": self.cpus, "mem_gb": self.mem_gb, "name": "learnlock",
                 "slurm_partition": self.partition, "slurm_array_parallelism": self.max_running}
        return {**{k: v for k, v in named.items() if v is not None}, **self.params}

    def check_device(self, device: torch.device) -> None:
        """Refuse a run whose cells would compute on another kind of device than this process (their
        cache keys are made here, see the module docstring)."""
        if device.type == "cuda" and not self.gpus:
            raise LearnlockError("this process computes on a GPU, where the cells' keys are made, yet the cells ask "
                                 "for no GPU; give `gpus` >= 1, or compute here on the CPU (`device` cpu)")
        if device.type != "cuda" and self.gpus:
            raise LearnlockError(
                f"this process computes on the CPU, where the cells' keys are made, yet each cell asks for {self.gpus} "
                "GPU(s); run the command itself on a GPU node (e.g. inside `srun --gpus 1`), or give `gpus` 0 to "
                "train the cells on CPUs")

    def check_here(self) -> None:
        """Refuse, before any work, a SLURM run from a machine that cannot submit (no srun / sbatch)."""
        missing = [c for c in ("srun", "sbatch") if self.cluster == "slurm" and shutil.which(c) is None]
        require(not missing, f"the slurm executor submits with sbatch and srun, and this machine has no "
                f"{' or '.join(missing)} on its PATH: run the command on a node of the SLURM cluster")


def require_submitit():
    """The submitit module, or a clear error."""
    try:
        import submitit
    except ImportError:
        raise LearnlockError("the slurm executor needs submitit: pip install learnlock[slurm] "
                             "(or pip install submitit)") from None
    return submitit


def _run_cell(shared_file: str, code: str, device: str, threads: int, fn: Callable, args: tuple):
    """One cell, in a cluster job: this job's device and threads, `shared` from its file, fn(shared, *args)."""
    here = code_version()
    if here != code:
        raise LearnlockError(f"this node runs other learnlock code (version {here}) than the command that sent the "
                             f"cell ({code}); install the same learnlock on every node (a shared environment)")
    start_worker(device, int(os.environ.get("SLURM_CPUS_PER_TASK") or threads))
    # the file Cells wrote for this run into the user's own output folder: unpickling it reads the
    # user's own data back, never a file from elsewhere
    with open(shared_file, "rb") as f:
        shared = pickle.load(f)
    return to_cpu(fn(shared, *args))


class Cells:
    """A `Workers` map on SLURM (see the module docstring); `submitted` counts the jobs it sent."""

    def __init__(self, settings: Slurm, shared: Any, folder: str | Path | None):
        self.submitit = require_submitit()
        require(settings.folder is not None or folder is not None,
                "the slurm executor needs a folder on the shared filesystem for its jobs: give `out`")
        self.settings, self.shared = settings, shared
        self.folder = Path(settings.folder if settings.folder is not None else folder)
        self.shared_file: Path | None = None
        self.submitted = 0

    def close(self) -> None:
        """Remove the shared file (every job of this run has ended or was cancelled)."""
        if self.shared_file is not None:
            self.shared_file.unlink(missing_ok=True)
            self.shared_file = None
        try:
            (self.folder / "%j").rmdir()  # where submitit stages its pickles: empty by now
        except OSError:
            pass

    def _executor(self):
        executor = self.submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.settings.cluster)
        try:
            executor.update_parameters(**self.settings.parameters())
        except (NameError, AssertionError, ValueError, TypeError, RuntimeError) as e:  # submitit's messages for a bad parameter
            raise LearnlockError(f"a SLURM parameter was refused: {e}") from None
        return executor

    def map(self, fn: Callable, calls: Sequence[tuple], on_done: Callable[[int, Any], None] | None = None) -> list:
        results: list = [None] * len(calls)
        todo = []
        for i, args in enumerate(calls):  # what the cache holds is read here, never submitted
            try:
                with only_cached():
                    results[i] = fn(self.shared, *args)
            except NotCached:
                todo.append(i)
                continue
            if on_done:
                on_done(i, results[i])
        if not todo:
            return results
        if self.shared_file is None:
            path = self.folder / f"shared-{uuid.uuid4().hex[:12]}.pkl"
            atomic_write_bytes(path, pickle.dumps(to_cpu(self.shared), protocol=pickle.HIGHEST_PROTOCOL), private=True)
            self.shared_file = path
        device = "cuda" if self.settings.gpus else "cpu"
        n = len(todo)
        executor = self._executor()
        try:
            jobs = executor.map_array(_run_cell, [str(self.shared_file)] * n, [code_version()] * n, [device] * n,
                                      [torch.get_num_threads()] * n, [fn] * n, [to_cpu(calls[i]) for i in todo])
        except (OSError, RuntimeError) as e:  # sbatch missing or refusing (submitit's FailedSubmissionError)
            raise LearnlockError(f"submitting {n} cells to SLURM failed: {e}") from None
        self.submitted += n
        return self._collect(dict(zip(jobs, todo)), results, on_done)

    def _collect(self, pending: dict, results: list, on_done) -> list:
        local = self.settings.cluster == "local"
        poll_s, grace_s = (0.2, 0.0) if local else (5.0, 30.0)
        failed = []
        try:
            while pending:
                for job in [j for j in pending if j.done()]:
                    i = pending.pop(job)
                    result, error = self._outcome(job, grace_s)
                    if error is not None:
                        failed.append((i, job, error))
                        continue
                    results[i] = result
                    for path in (job.paths.submitted_pickle, job.paths.result_pickle):
                        path.unlink(missing_ok=True)  # the result is here (and cached); the logs stay
                    if on_done:
                        on_done(i, result)
                if pending:
                    time.sleep(poll_s)
        except BaseException:  # Ctrl-C, or on_done failed: the cells still queued or running are cancelled
            for job in pending:
                job.cancel(check=False)
            raise
        if failed:
            lines = [f"cell {i} (job {job.job_id}): {error}; logs {job.paths.stderr} and {job.paths.stdout}"
                     for i, job, error in failed[:3]]
            more = f"\n  ... and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise LearnlockError(
                f"{len(failed)} cell(s) failed on the cluster; the cells that finished are cached, so running the "
                "same command again submits only the missing ones:\n  " + "\n  ".join(lines) + more)
        return results

    def _outcome(self, job, grace_s: float) -> tuple[Any, str | None]:
        """(result, None) of a finished job, or (None, what went wrong)."""
        deadline = time.monotonic() + grace_s  # a shared filesystem can show the result file late
        while not job.paths.result_pickle.exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if not job.paths.result_pickle.exists():
            return None, f"ended without a result (state {job.state}: killed, out of time or out of memory?)"
        from submitit.core.utils import UncompletedJobError

        try:
            return job.result(), None
        except UncompletedJobError as e:  # the cell raised: its traceback's last line
            parts = str(e).split("-" * 22)
            trace = parts[1].strip().splitlines() if len(parts) > 2 else str(e).splitlines()
            return None, trace[-1] if trace else "failed"
