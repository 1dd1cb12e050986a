"""UGE in federated learning (the paper's supplementary Table 9) on the CPU benchmark data.

    .venv/bin/python bench/federated.py                # class halves: runs (or resumes), prints the table
    .venv/bin/python bench/federated.py --split iid    # the control: same clients, iid shards

It runs exactly the user command below and records its wall time; the federated run folder
(published shards, cached cells, federated.json/.md/.png) is runs/bench-federated-SPLIT/, and the
plot is copied to docs/bench/federated_SPLIT.png.

    learnlock federated --data folder:../shared/datasets/cifar10-jpg --per-class 100 \
        --test-per-class 100 --clients 2 --split classes --global-arch cnn --global-seed 1234 \
        --set encoder_resolution=32 --hackers cnn:1,resnet8:1 --distill cnn:1 --out runs/bench-federated-classes

Two clients hold the class halves (airplane..deer, dog..truck) of CIFAR-10 (500 images each);
each protects its shard with the UGE `paper` preset (rho 0.04, encoder at 32 px as in
bench/uge_table1.py) against the global cnn (init seed 1234), trained with the `cpu` recipe.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import torch

from learnlock import cli
from learnlock.files import atomic_write_json
from learnlock.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "uge"
SETTINGS = {"uge": ["--set", "encoder_resolution=32"]}  # per method: sized for 2 CPU cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="classes")
    ap.add_argument("--method", default=DEFAULT)
    opts = ap.parse_args()
    split, method = opts.split, opts.method
    name = split.replace(":", "") + ("" if method == DEFAULT else f"-{method}")
    out = ROOT / "runs" / f"bench-federated-{name}"
    args = ["federated", "--data", f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}",
            "--per-class", "100", "--test-per-class", "100", "--clients", "2", "--split", split,
            "--method", method, "--global-arch", "cnn", "--global-seed", "1234",
            *SETTINGS.get(method, []),
            "--hackers", "cnn:1,resnet8:1", "--distill", "cnn:1", "--out", str(out)]
    start = time.perf_counter()
    rc = cli.main(args)
    if rc:
        raise SystemExit(rc)
    wall = round(time.perf_counter() - start, 1)
    result = json.loads((out / "federated.json").read_text())
    atomic_write_json(out / "bench_meta.json", {
        "date": date.today().isoformat(), "command": "learnlock " + " ".join(args),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "wall_s_this_call": wall,
        "protect_wall_s": result["protect_wall_s"],
        "cell_wall_s": {k: v["wall_s"] for k, v in result["rows"].items()}, **provenance()})
    (ROOT / "docs" / "bench").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "federated.png", ROOT / "docs" / "bench" / f"federated_{name}.png")
    print(f"\nwall time of this call: {wall} s; protection per client: {result['protect_wall_s']} s")


if __name__ == "__main__":
    main()
