"""One short GPU call that checks the CPU tier against full size (H100/H200, about 5 minutes).

    .venv/bin/python bench/gpu_tier.py --data cifar10-jpg.tar.xz --out runs/gpu-tier      # on the GPU machine
    .venv/bin/python bench/gpu_tier.py --device cpu --stages 1 --per-class 8 --epochs 1 ...  # tiny, on a CPU

Stages, in order, each written to OUT/stage-N.json as it finishes (what is done comes back even
if time runs out) and skipped by a rerun:
  0. the smoke test: bench/gpu_smoke.py, every command at tiny size;
  1. the 10k tier (owner split, 1,000 images per class): clean, em and keyed's default; fastnet
     (`fast`) and ResNet-18 (`ue-gpu`) hackers under no defence, ISS grayscale and JPEG-10, and
     keyed's authorized network;
  2. the same cells on the full 50,000 training images;
  3. why grayscale does not restore em at the 10k tier: em as the paper runs it (ResNet-18
     surrogate, 20 steps of 0.8/255, to convergence) beside clean, under no defence and ISS
     grayscale, fastnet and ResNet-18 hackers (about 10 minutes on an H200; ask for it by name,
     --stages 3, it is not in the default).
Every stage also records, per protection, whether its noise and the noise's luma image (what
grayscale keeps) are linear shortcuts (bench/noise_shortcuts.py): on the CPU every EM noise's luma
image is (0.87-0.98), so a ResNet-18-surrogate noise whose luma image is not would explain stage 3.
Tests on the full 10,000 test images. Cells go through the cell cache (OUT/cells), so a stage cut
by the deadline resumes cell by cell. The internal deadline (--deadline, seconds) is checked
before every cell; a cell that starts before it runs to its end, so leave the run's own timeout a
margin. Data: the cifar10-jpg folder or its .tar.xz (the GPU machine gets the checkout, not
../shared; see README "On a GPU").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from gpu_common import cifar_folder, default_data
from noise_shortcuts import noise_stats
from tier10k import protect, train_cell

from learnlock.cells import CellCache, code_version
from learnlock.data import load_dataset
from learnlock.data.splits import load_split
from learnlock.device import current_device, using
from learnlock.files import atomic_write_json
from learnlock.provenance import provenance
from learnlock.recipe import get_recipe

ROOT = Path(__file__).resolve().parents[1]
PROTECTIONS = ("clean", "em", "keyed")
DEFENCES = ("none", "iss-grayscale", "iss-jpeg")
NETS = {"fastnet": "fast", "resnet18": "ue-gpu"}


def cells(stage: int) -> list[tuple[str, str, str]]:
    """(protection, defence, net) in the order that settles the comparison soonest: every fastnet
    cell and keyed's authorized network (seconds each on a GPU) before the ResNet-18 cells (about
    a minute each at 10k), so a deadline cuts the slow network, not the evaluator's table."""
    if stage == 3:
        prots, defences, extra = ("clean", "em-paper"), ("none", "iss-grayscale"), []
    else:
        prots, defences, extra = PROTECTIONS, DEFENCES, [("keyed", "authorized", "fastnet")]
    fast = [(p, d, "fastnet") for d in defences for p in prots]
    slow = [(p, d, n) for n in NETS if n != "fastnet" for d in defences for p in prots]
    return fast + extra + slow


def run_stage(stage: int, args, folder: Path, deadline: float, log) -> dict:
    if stage == 0:
        start = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--data", str(folder), "--per-class", "2",
               "--device", args.device or "auto", "--out", str(Path(args.out) / "smoke")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return {"stage": 0, "ok": proc.returncode == 0, "seconds": round(time.perf_counter() - start, 1),
                "tail": (proc.stdout + proc.stderr)[-3000:]}
    spec = f"folder:{folder}"
    per_class = args.full_per_class if stage == 2 else args.per_class
    owner = load_dataset(spec, "train", per_class=per_class) if stage == 2 else load_split(spec, "owner", per_class)
    dev = load_split(spec, "dev", args.dev_per_class)
    test = load_split(spec, "test", args.test_per_class)
    over = {"epochs": args.epochs} if args.epochs else {}
    recipes = {net: get_recipe(name, **over) for net, name in NETS.items()}
    cache = CellCache(Path(args.out) / "cells")
    rows, protected, noise, done = [], {}, {}, True
    for prot, defence, net in cells(stage):
        if time.perf_counter() > deadline:
            done = False
            log(f"stage {stage}: deadline reached; rerun to continue")
            break
        if prot not in protected:
            rounds = {"max_rounds": args.max_rounds} if args.max_rounds else None
            protected[prot] = protect(cache, prot, owner, recipes["fastnet"], log, rounds)
            if prot != "clean":   # is the noise, and what grayscale keeps of it, a linear shortcut? (seconds)
                noise[prot] = noise_stats(owner.images, protected[prot][0], owner.labels)
        images, record, key = protected[prot]
        start = time.perf_counter()
        row = train_cell(cache, owner, images, dev, test, prot, defence, net, recipes[net], 0, False, key)
        rows.append({"protection": prot, "defence": defence, "net": net, "protect_s": record.get("wall_time_s"),
                     **row})
        log(f"stage {stage}: {net} {prot} {defence}: {100 * row['accuracy']:.1f} % ({time.perf_counter() - start:.0f} s)")
    return {"stage": stage, "complete": done, "owner": len(owner), "test": len(test), "dev": len(dev),
            "dev_note": "the dev split lies inside the training images at 50,000" if stage == 2 else "",
            "recipes": {n: r.to_dict() for n, r in recipes.items()}, "rows": rows, "noise": noise}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data(), help="cifar10-jpg folder or cifar10-jpg.tar.xz")
    p.add_argument("--out", default="runs/gpu-tier")
    p.add_argument("--device", help="cuda (default where there is one), cpu, cuda:N")
    p.add_argument("--stages", default="0,1,2")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds after which no new cell starts")
    p.add_argument("--per-class", type=int, default=1000, help="stage 1 owner images per class")
    p.add_argument("--full-per-class", type=int, help="stage 2 images per class (default: all 5,000)")
    p.add_argument("--dev-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, help="default: the full test split")
    p.add_argument("--epochs", type=int, help="override every recipe's epochs (tiny runs)")
    p.add_argument("--max-rounds", type=int, help="override every protection's max_rounds (tiny runs)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - start:6.1f} s] {m}", flush=True)  # noqa: E731
    out = Path(args.out)
    folder = cifar_folder(args.data, out / "data")
    with using(args.device or "auto"):
        log(f"device {current_device()}, code {code_version()}")
        failed = False
        for stage in (int(s) for s in args.stages.split(",")):
            path = out / f"stage-{stage}.json"
            if path.exists():
                log(f"stage {stage}: done before, skipped ({path})")
                continue
            t0 = time.perf_counter()
            result = run_stage(stage, args, folder, start + args.deadline, log)
            result.update(seconds=round(time.perf_counter() - t0, 1), device=str(current_device()), **provenance())
            if result.get("complete", result.get("ok")):
                atomic_write_json(path, result)
            else:
                atomic_write_json(out / f"stage-{stage}.partial.json", result)
            log(f"stage {stage}: {'done' if path.exists() else 'NOT complete'} in {result['seconds']} s")
            if stage == 0 and not path.exists():
                failed = True  # a failing command is the smoke test's finding: the cell stages still run
                log(result["tail"])
            elif not path.exists():
                return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
