"""Digest of what the CLI writes, to show a refactor changed no output.

Runs `protect` (uge, em, keyed, lock, random), `table1`, `audit` and `certify` through the CLI on
tiny Fashion-MNIST and CIFAR-10 subsets with fixed seeds and threads, then hashes every published file and
the result JSONs with timing and provenance fields removed (they differ between any two runs).
What moves with the git commit alone is named, not compared: the published folders' fingerprints
(their manifests record the commit) and the cache's cell keys (they hash the source), so a cell is
matched by its kind and inputs.

    python bench/same_outputs.py --out runs/same/before --digest before.json   # on the old commit
    python bench/same_outputs.py --out runs/same/after --compare before.json   # on the new one

Exit 1 and a list of differing outputs when a digest differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# `authentication` (the manifest's MAC, issue 15) is new since the reference digest of the refactor
VOLATILE = {"authentication", "code_version", "date", "wall_time_s", "wall_s", "train_seconds", "folder", "learnlock_version", "git_commit", "torch_version", "cpu_threads", "created", "time_s", "seconds", "elapsed_s"}
ROOT = Path(__file__).resolve().parents[1]
CIFAR = f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}"  # RGB, for the colour key
DATA = ["--data", "fashion-mnist", "--per-class", "6"]
TEST = ["--test-per-class", "5"]
RECIPE = ["--epochs", "1", "--no-progress"]
AUTHORIZED = ["--authorized-epochs", "1", "--no-progress"]   # protect's recipe for the authorized network


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def named(text: str, names: dict[str, str]) -> str:
    """`text` with this run's folder and what depends on the commit replaced by their names."""
    for value, name in names.items():
        text = text.replace(value, name)
    return text


def digest_file(path: Path, names: dict[str, str]) -> str:
    if path.suffix == ".json":
        text = named(json.dumps(strip(json.loads(path.read_text())), sort_keys=True), names)
        return hashlib.sha256(text.encode()).hexdigest()
    if path.suffix == ".png" and path.parent.name not in ("images",) and "train" not in path.parts:
        return "plot"  # matplotlib plots embed nothing we test; their numbers are in the JSONs
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commit_names(out: Path) -> dict[str, str]:
    """Strings of this run that differ between two commits although no output does, each mapped to a
    name: the output folder, and each published folder's fingerprint (its manifest records the git
    commit, so the fingerprint, and every cell that takes the folder as input, moves with it)."""
    from learnlock.data.published import published_fingerprint

    names = {str(out): "<out>"}
    for manifest in sorted(out.rglob("manifest.json")):
        names[published_fingerprint(json.loads(manifest.read_text()))] = f"<published {manifest.parent.name}>"
    return names


def cell_name(path: Path, names: dict[str, str]) -> str | None:
    """A cached cell's name without its code-dependent key: its kind and a hash of its inputs (with
    the commit's strings named), so the same cell under two commits has one name; None if not a cell."""
    if len(path.parts) < 3 or path.parts[-3] != "cells" or path.suffix not in (".json", ".safetensors"):
        return None
    record = path.with_suffix(".json")
    inputs = named(json.dumps(json.loads(record.read_text()).get("inputs"), sort_keys=True), names)
    return str(path.parent / f"{hashlib.sha256(inputs.encode()).hexdigest()[:24]}{path.suffix}")


def run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "learnlock", *args]
    print("$ learnlock " + " ".join(args), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def produce(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    run(["protect", "--method", "uge", "--preset", "paper", *DATA, "--authorized", "cnn", "--key-seed", "7",
         "--set", "encoder_resolution=32", "--set", "epochs=1", *AUTHORIZED,
         "--key-out", f"{out}/uge.key.safetensors", "--out", f"{out}/uge"])
    run(["protect", "--method", "keyed", "--data", f"{CIFAR}/train", "--per-class", "6", "--authorized", "cnn", "--key-seed", "7",
         "--set", "max_rounds=2", *AUTHORIZED, "--key-out", f"{out}/keyed.key.safetensors", "--out", f"{out}/keyed"])
    run(["protect", "--method", "lock", *DATA, "--set", "max_rounds=1", "--authorized", "cnn", "--key-seed", "7",
         *AUTHORIZED, "--key-out", f"{out}/lock.key.safetensors", "--out", f"{out}/lock"])
    run(["protect", "--method", "em", *DATA, "--set", "max_rounds=1", "--out", f"{out}/em"])
    run(["protect", "--method", "random", *DATA, "--out", f"{out}/random"])
    run(["table1", "--published", f"{out}/uge", "--authorized", f"{out}/uge.key.safetensors", *TEST,
         "--hackers", "cnn:1", "--distill", "cnn:1", *RECIPE, "--out", f"{out}/table1"])
    run(["audit", f"{out}/keyed", "--authorized", f"{out}/keyed.key.safetensors", *TEST,
         "--attacks", "retrain,distill,iss-grayscale,key-estimate,purify-diffpure,recover", "--nets", "cnn",
         "--test", f"{CIFAR}/test", "--aux", f"{CIFAR}/train", "--aux-per-class", "4", "--set", "purify-diffpure.train_steps=3",
         "--set", "purify-diffpure.channels=[16,16]", "--set", "purify-diffpure.num_train_timesteps=50",
         "--set", "purify-diffpure.t_star=5", "--set", "purify-diffpure.samples=0",
         "--set", "recover.epochs=1", "--set", "recover.etas=[1.0]", *RECIPE, "--out", f"{out}/audit"])
    run(["certify", f"{out}/em", "--arch", "cnn", "--n", "20", *TEST, *RECIPE, "--out", f"{out}/certify"])


def digest(out: Path) -> dict[str, str]:
    names = commit_names(out)
    got = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            got[str(Path(cell_name(p, names) or p).relative_to(out))] = digest_file(p, names)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/same-outputs")
    ap.add_argument("--digest", help="write the digest JSON here")
    ap.add_argument("--compare", help="compare against this digest JSON; exit 1 on any difference")
    ap.add_argument("--no-run", action="store_true", help="digest the outputs already in --out")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.no_run:
        produce(out)
    got = digest(out)
    if args.digest:
        Path(args.digest).write_text(json.dumps(got, indent=1) + "\n")
    print(f"{len(got)} output files digested", file=sys.stderr)
    if args.compare:
        want = json.loads(Path(args.compare).read_text())
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        for k in diff:
            print(f"DIFFERS: {k} ({'missing' if k not in got else 'new' if k not in want else 'content'})")
        print(f"{len(want) - len(diff)}/{len(want)} identical" if diff else f"all {len(got)} outputs identical")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
