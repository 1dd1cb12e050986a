"""What bench/gpu_smoke.py and bench/gpu_table1.py share: where CIFAR-10 is, and running one
`learnlock` command with its wall time."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
CANDIDATES = [SHARED / "cifar10-jpg", SHARED / "cifar10-jpg.tar.xz", ROOT / "cifar10-jpg.tar.xz"]


def default_data() -> Path | None:
    """The CIFAR-10 folder beside the repository, else its packed .tar.xz (first that exists)."""
    return next((p for p in CANDIDATES if p.exists()), None)


def cifar_folder(data: Path | None, into: Path) -> Path:
    """The cifar10-jpg folder: `data` itself, or `data` (.tar.xz) unpacked into `into` once (a
    folder holding train/ and test/ is reused as it is)."""
    if data is None:
        sys.exit("error: no CIFAR-10 found; give --data PATH (the cifar10-jpg folder or cifar10-jpg.tar.xz)")
    data = Path(data)
    if data.is_dir():
        return data
    if not data.name.endswith((".tar.xz", ".txz")) or not data.is_file():
        sys.exit(f"error: --data {data} is neither the cifar10-jpg folder nor a .tar.xz of it")
    folder = into / "cifar10-jpg"
    if (folder / "train").is_dir() and (folder / "test").is_dir() and (into / ".complete").exists():
        return folder
    start = time.perf_counter()
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data, "r:xz") as tar:
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, **kw)
    if not (folder / "train").is_dir():
        sys.exit(f"error: {data} does not unpack to cifar10-jpg/train (got {sorted(p.name for p in into.iterdir())})")
    (into / ".complete").write_text(str(data) + "\n")
    print(f"[{time.perf_counter() - start:6.1f} s] unpacked {data} into {into}", flush=True)
    return folder


def learnlock(*args, log: Path | None = None) -> tuple[float, str]:
    """Run `python -m learnlock ARGS` with this interpreter; print the command and its time; on
    failure print its stderr and exit 1. Returns (seconds, stdout)."""
    cmd = [sys.executable, "-m", "learnlock", *map(str, args)]
    shown = "learnlock " + " ".join(map(str, args))
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"$ {shown}\n{proc.stdout}{proc.stderr}\n[{seconds:.1f} s, exit {proc.returncode}]\n\n")
    if proc.returncode != 0:
        print(f"FAILED after {seconds:.1f} s (exit {proc.returncode}): {shown}\n--- stderr ---\n{proc.stderr}"
              f"--- stdout ---\n{proc.stdout}", flush=True)
        sys.exit(1)
    print(f"[{seconds:6.1f} s] ok", flush=True)
    return seconds, proc.stdout
