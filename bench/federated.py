"""UGE in federated learning (the paper's supplementary Table 9) on the CPU benchmark data.

    .venv/bin/python bench/federated.py            # runs (or resumes) and prints the table

It runs exactly the user command below and records its wall time; the federated run folder
(published shards, cached cells, federated.json/.md/.png) is runs/bench-federated/, and the plot
is copied to docs/bench/federated.png.

    learnlock federated --data folder:../shared/datasets/cifar10-jpg --per-class 100 \
        --test-per-class 100 --clients 2 --split classes --global-arch cnn --global-seed 1234 \
        --set encoder_resolution=32 --hackers cnn:1,resnet8:1 --distill cnn:1 --out runs/bench-federated

Two clients hold the class halves (airplane..deer, dog..truck) of CIFAR-10 (500 images each);
each protects its shard with the UGE `paper` preset (rho 0.04, encoder at 32 px as in
bench/uge_table1.py) against the global cnn (init seed 1234), trained with the `cpu` recipe.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch

from learnlock import cli
from learnlock.provenance import atomic_write_json, provenance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench-federated"
ARGS = ["federated", "--data", f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}",
        "--per-class", "100", "--test-per-class", "100", "--clients", "2", "--split", "classes",
        "--global-arch", "cnn", "--global-seed", "1234", "--set", "encoder_resolution=32",
        "--hackers", "cnn:1,resnet8:1", "--distill", "cnn:1", "--out", str(OUT)]


def main() -> None:
    start = time.perf_counter()
    rc = cli.main(ARGS + sys.argv[1:])
    if rc:
        raise SystemExit(rc)
    wall = round(time.perf_counter() - start, 1)
    result = json.loads((OUT / "federated.json").read_text())
    atomic_write_json(OUT / "bench_meta.json", {
        "date": date.today().isoformat(), "command": "learnlock " + " ".join(ARGS + sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "wall_s_this_call": wall,
        "protect_wall_s": result["protect_wall_s"],
        "cell_wall_s": {k: v["wall_s"] for k, v in result["rows"].items()}, **provenance()})
    (ROOT / "docs" / "bench").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OUT / "federated.png", ROOT / "docs" / "bench" / "federated.png")
    print(f"\nwall time of this call: {wall} s; protection per client: {result['protect_wall_s']} s")


if __name__ == "__main__":
    main()
