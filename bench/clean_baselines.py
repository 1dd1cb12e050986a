"""Clean baselines: test accuracy of every zoo network trained on clean data (CPU-sized).

    .venv/bin/python bench/clean_baselines.py [--out runs/bench-clean] [--quick]

These are the numbers every protection is measured against. Two tiers, because a 2-core CPU
cannot train the heavy nets at the size the light ones use inside a 15-minute budget:
  - main: cnn, lenet, resnet8, shufflenetv2, vgg11 on CIFAR-10 (from ../shared/datasets/cifar10-jpg)
    and Fashion-MNIST, 100 train + 100 test images per class, `cpu` recipe (15 epochs);
  - heavy: resnet18 and mobilenetv2 (about 20 ms per image-epoch each on 2 cores) on CIFAR-10 only,
    50 train images per class, 5 epochs: a smoke-scale number, not a converged baseline.
Seeds 0 and 1 (init and data order). Results resume from --out if the run is killed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from learnlock import RECIPES, evaluate_nets, load_dataset, results_table
from learnlock.files import atomic_write_json
from learnlock.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
CIFAR = f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}"

TIERS = [
    # (name, dataset spec, nets, train per class, test per class, epochs)
    ("main", CIFAR, ["cnn", "lenet", "resnet8", "shufflenetv2", "vgg11"], 100, 100, 15),
    ("main", "fashion-mnist", ["cnn", "lenet", "resnet8", "shufflenetv2", "vgg11"], 100, 100, 15),
    ("heavy", CIFAR, ["resnet18", "mobilenetv2"], 50, 100, 5),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-clean"))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--quick", action="store_true", help="1 epoch, 10 per class: checks the script runs")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    summary = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
               f"torch threads, torch {torch.__version__}", "command": " ".join(sys.argv), **provenance(),
               "tiers": []}
    start = time.perf_counter()
    for tier, spec, nets, per_class, test_per_class, epochs in TIERS:
        if args.quick:
            per_class, test_per_class, epochs = 10, 10, 1
        train = load_dataset(spec, "train", per_class=per_class, seed=0)
        test = load_dataset(spec, "test", per_class=test_per_class, seed=0)
        recipe = replace(RECIPES["cpu"], epochs=epochs)
        name = f"{tier}-{'cifar10' if spec == CIFAR else spec}"
        print(f"\n## {name}: {len(train)} train / {len(test)} test images, {epochs} epochs, seeds {seeds}",
              flush=True)
        rows = evaluate_nets(train, test, nets, seeds, recipe, out_dir=Path(args.out) / name)
        print(results_table(rows), flush=True)
        summary["tiers"].append({"name": name, "train_size": len(train), "test_size": len(test),
                                 "epochs": epochs, "rows": rows})
    summary["total_wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(Path(args.out) / "summary.json", summary)
    print(f"\ntotal wall time {summary['total_wall_s']:.0f} s; summary in {args.out}/summary.json")


if __name__ == "__main__":
    main()
