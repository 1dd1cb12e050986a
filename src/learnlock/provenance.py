"""What produced a result: package version, git commit, torch version, thread count and device."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def version() -> str:
    try:
        return metadata.version("learnlock")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def git_commit() -> str | None:
    """Commit of the source checkout this package runs from, or None (e.g. a wheel install)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """What a result depends on besides its inputs and seeds. "Same seed, same bytes" holds on a CPU
    for the same learnlock version, torch version and CPU thread count: float reductions
    (convolutions, matrix products) sum in an order that depends on the thread count, and an
    optimisation that runs for many steps carries a one-ulp difference into other pixels. On a GPU
    it does not hold bit for bit (cuDNN autotuning, atomic adds in backward passes, bf16 autocast):
    reruns agree in distribution, not in bytes."""
    import torch

    return {"learnlock_version": version(), "git_commit": git_commit(), "torch_version": torch.__version__,
            "cpu_threads": torch.get_num_threads()}


def result_provenance() -> dict[str, Any]:
    """`provenance()` plus the device the run computed on: what a scenario's result JSON records
    (a manifest or a cache key never records the device; a result says where it was measured)."""
    from .device import current_device  # keeps `import learnlock.provenance` free of torch

    return {**provenance(), "device": str(current_device())}
