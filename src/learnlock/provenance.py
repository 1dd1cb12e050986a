"""What produced a result: package version, git commit, and atomic file writes."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
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
    from .device import current_device

    return {**provenance(), "device": str(current_device())}


def _umask() -> int:
    try:  # Linux shows it without changing it (os.umask would, process-wide, for a moment)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # elsewhere: read by setting a strict mask, and put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, private: bool = False) -> None:
    """Write via a temp file in the same folder + os.replace, so a crash never leaves half a file.
    Permissions as open() gives (the umask applies); `private` files (keys) are 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o666 & ~_umask())  # mkstemp alone makes every file 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
