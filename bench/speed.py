"""Training speed: images/s of learnlock's `fit` against a plain training loop, measured in one run.

    OMP_NUM_THREADS=2 .venv/bin/python bench/speed.py --quick --out runs/bench-speed/speed.json
    .venv/bin/python bench/speed.py --device cuda --out runs/bench-speed/cuda.json

Both loops train the same network (cnn, resnet18; same init) on the same synthetic data (random
uint8 images, random labels, resident on the device) with the same optimiser (SGD, momentum 0.9,
Nesterov, weight decay 5e-4), batch size and precision (fit's `auto`: bf16 autocast and
channels_last on CUDA, fp32 on CPU), augmentation off, for the same number of optimiser steps on
batches drawn with replacement. The reference loop is what a lean hand-written loop does: indices
drawn on the device, the loss summed on the device and read once at the end. The ratio fit/reference
is fit's cost for its generality (schedule, callbacks, exact replay, divergence check): 1.0 is no cost.
Each figure is the median of --repeats timed runs (fit and reference in turn, so that a busy
machine slows both alike) after one untimed warm-up run of each; a run includes
what a call of fit includes (moving the data to the device, building the optimiser).
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import replace
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from learnlock.data import ImageDataset
from learnlock.device import using
from learnlock.files import atomic_write_json
from learnlock.models import create_model
from learnlock.provenance import provenance
from learnlock.recipe import Recipe, native_bf16
from learnlock.training import fit

NETS = ("cnn", "resnet18")
# optimiser steps per timed run: (quick, full), by device type
STEPS = {"cpu": {"cnn": (16, 48), "resnet18": (3, 12)}, "cuda": {"cnn": (100, 400), "resnet18": (50, 200)}}


def synthetic(n: int, size: int, classes: int = 10) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return ImageDataset(images, labels, tuple(f"c{i}" for i in range(classes)), tuple(map(str, range(n))), "synthetic")


def recipe_for(device: torch.device, batch: int) -> Recipe:
    return Recipe(name="speed", epochs=1, batch_size=batch, lr=0.01, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, schedule="constant", augment="none", seed=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference(model, data: ImageDataset, recipe: Recipe, steps: int, device: torch.device) -> float:
    """A plain loop, same work as fit(steps=...): returns the mean loss (one host sync, at the end)."""
    cuda = device.type == "cuda"
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    images, labels = data.images.to(device), data.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                          weight_decay=recipe.weight_decay)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    gen = torch.Generator(device=device).manual_seed(recipe.seed)
    total = torch.zeros((), device=device)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (recipe.batch_size,), generator=gen, device=device)
        x = images[idx].float().div_(255)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total.item() / steps


def timed(runs: dict, device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each run, `repeats` times, the runs taken in turn so that a busy machine slows
    them alike; after one untimed warm-up of each (allocator, cudnn autotuning, lazy initialisation)."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def bench(device: torch.device, data: ImageDataset, batch: int, quick: bool, repeats: int) -> list[dict]:
    rows = []
    recipe = recipe_for(device, batch)
    for net in NETS:
        steps = STEPS[device.type][net][0 if quick else 1]

        def model():
            return create_model(net, data.num_classes, 3, seed=0)

        times = timed({"fit": lambda: fit(model(), data, recipe, progress=False, steps=steps),
                       "reference": lambda: reference(model(), data, recipe, steps, device)}, device, repeats)
        fit_s, ref_s = times["fit"], times["reference"]
        images = steps * batch
        row = {"device": str(device), "net": net, "precision": "bf16" if device.type == "cuda" else "fp32",
               "steps": steps, "batch": batch, "fit_img_s": images / statistics.median(fit_s),
               "ref_img_s": images / statistics.median(ref_s), "fit_seconds": fit_s, "ref_seconds": ref_s}
        row["ratio"] = row["fit_img_s"] / row["ref_img_s"]
        print(f"{device} {net}: fit {row['fit_img_s']:.0f} img/s, reference {row['ref_img_s']:.0f} img/s, "
              f"ratio {row['ratio']:.2f}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def precision_rows(device: torch.device, data: ImageDataset, nets: list[str], batch: int, steps: int,
                   repeats: int) -> list[dict]:
    """fit's images/s in fp32 and under bf16 autocast, per net, timed in turn: what
    `Recipe.precision="native"` would buy on this machine (learnlock.training.native_bf16)."""
    rows = []
    for net in nets:
        def run(precision, net=net):
            recipe = replace(recipe_for(device, batch), precision=precision)
            return lambda: fit(create_model(net, data.num_classes, 3, seed=0), data, recipe, progress=False, steps=steps)

        times = timed({"fp32": run("fp32"), "bf16": run("bf16")}, device, repeats)
        fp32, bf16 = (steps * batch / statistics.median(times[k]) for k in ("fp32", "bf16"))
        rows.append({"device": str(device), "net": net, "steps": steps, "batch": batch, "fp32_img_s": fp32,
                     "bf16_img_s": bf16, "bf16_over_fp32": bf16 / fp32, "native_bf16": native_bf16(), "seconds": times})
        print(f"{device} {net}: fp32 {fp32:.0f} img/s, bf16 {bf16:.0f} img/s, ratio {bf16 / fp32:.2f}",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| device | net | precision | steps x batch | fit img/s | reference img/s | fit / reference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['net']} | {r['precision']} | {r['steps']} x {r['batch']} | "
                     f"{r['fit_img_s']:.0f} | {r['ref_img_s']:.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None,
                    help="comma-separated devices (default: cpu, and cuda when this machine has one)")
    ap.add_argument("--quick", action="store_true", help="few steps, 3 repeats: under 5 minutes on a 2-core CPU")
    ap.add_argument("--images", type=int, default=2048, help="synthetic training images")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 3 quick, 5 full)")
    ap.add_argument("--out", default="runs/bench-speed/speed.json")
    ap.add_argument("--precision", metavar="NETS", help="instead: fit's fp32 against bf16 images/s for these "
                    "comma-separated nets (e.g. cnn,fastnet), --steps steps per timed run")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    if args.precision:
        data = synthetic(args.images, args.size)
        with using(args.device or "cpu") as device:
            rows = precision_rows(device, data, args.precision.split(","), args.batch, args.steps, args.repeats or 3)
        atomic_write_json(Path(args.out), {"date": date.today().isoformat(), "command": " ".join(sys.argv),
                                           **provenance(), "rows": rows})
        for r in rows:
            print(f"| {r['device']} | {r['net']} | {r['steps']} x {r['batch']} | {r['fp32_img_s']:.0f} | "
                  f"{r['bf16_img_s']:.0f} | {r['bf16_over_fp32']:.2f} |")
        return
    devices = args.device.split(",") if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    repeats = args.repeats or (3 if args.quick else 5)
    data = synthetic(args.images, args.size)
    start = time.perf_counter()
    rows = []
    for d in devices:
        with using(d) as device:  # fit computes where learnlock.device says
            rows += bench(device, data, args.batch, args.quick, repeats)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    summary = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "images": args.images,
               "image_size": args.size, "batch": args.batch, "repeats": repeats,
               "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, gpu {gpu}",
               **provenance(), "rows": rows,
               "wall_s": time.perf_counter() - start}
    atomic_write_json(Path(args.out), summary)
    print(f"{args.images} random {args.size}x{args.size} images, median of {repeats} runs "
          f"({summary['wall_s']:.0f} s in all)\n")
    print(table(rows))


if __name__ == "__main__":
    main()
