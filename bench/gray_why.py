"""Why ISS grayscale does not restore EM at the 10k tier (issue 20: a shape that does not reproduce).

Published (ResNet-18, 50,000 images, 60+ epochs): EM under grayscale 88-93 % against 92 % clean.
The 10k tier measures a ratio of 0.42. This script separates two of the suspects with the tier's
own cells (fastnet hacker, `fast` recipe, seed 0, ISS grayscale on train and test):
- size: the same EM pixels on the first 250 and 500 owner images per class (and the tier's 1,000);
  a ratio that climbs with the owner set points at size (50,000 images would restore more); with
  epochs per size (250:40) a smaller subset trains as many optimiser steps as the tier, which
  separates the images from the steps;
- schedule: 30 epochs instead of 10 at 1,000 per class; a ratio that climbs points at the schedule;
- the hacker's recipe (--variants, at 1,000 per class): `fast` differs from the published ResNet-18
  recipe in more than its length: 2-pixel crops instead of 4, label smoothing 0.2 instead of none, a
  test-time flip. Each variant changes those and nothing else; a ratio that climbs points at them.
It also writes the noise's colour statistics (how much of it survives grayscale).
The surrogate (cnn here, ResNet-18 published) is the third suspect; bench/gpu_tier.py measures it.

    OMP_NUM_THREADS=2 .venv/bin/python bench/gray_why.py --cache runs/cells --out docs/bench/cifar10k

Cells come from and go to the shared cell cache, so the tier's 10-epoch cells are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tier10k  # noqa: E402  (the tier's cells, so the cached ones are reused)
from noise_shortcuts import LUMA  # noqa: E402

from learnlock.cells import code_version  # noqa: E402
from learnlock.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from learnlock.provenance import provenance  # noqa: E402
from learnlock.recipe import get_recipe  # noqa: E402

# hacker recipes that differ from `fast` in one published setting each, and in all of them at once
VARIANTS = {"crop4": {"crop_padding": 4}, "no-smoothing": {"label_smoothing": 0.0},
            "published-augment": {"crop_padding": 4, "label_smoothing": 0.0, "test_flip": False}}


def first_per_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the first k items of each class, in order: the nested owner subset of size k."""
    seen: dict[int, int] = {}
    keep = []
    for i, c in enumerate(labels.tolist()):
        if seen.get(c, 0) < k:
            seen[c] = seen.get(c, 0) + 1
            keep.append(i)
    return torch.tensor(keep)


def colour_stats(clean: torch.Tensor, protected: torch.Tensor) -> dict:
    """How much of the noise survives grayscale: the luma image's RMS against the noise's."""
    d = protected.float() / 255 - clean.float() / 255
    y = (d * LUMA).sum(1, keepdim=True)
    return {"noise_rms_255": float(d.pow(2).mean().sqrt() * 255), "luma_rms_255": float(y.pow(2).mean().sqrt() * 255),
            "luma_energy_share": float((y.expand_as(d) ** 2).sum() / (d ** 2).sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="250,500,1000",
                   help="owner images per class, each optionally with its epochs (250:40 trains the 2,500-image "
                        "subset as many optimiser steps as 1,000 per class for 10 epochs)")
    p.add_argument("--long-epochs", type=int, default=30, help="the schedule check's epochs (0: skip)")
    p.add_argument("--variants", default="", help=f"comma-separated hacker recipes at --per-class: {', '.join(VARIANTS)}")
    p.add_argument("--protection", default="em", choices=[k for k, v in tier10k.PROTECTIONS.items() if v],
                   help="the tier's row whose pixels are measured (ar: the negative control)")
    tier10k.tier_arguments(p, out_help="where gray_why.json and .md go")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    tier = tier10k.open_tier(args)
    cache, owner, dev, test, fast, log = tier.cache, tier.owner, tier.dev, tier.test, tier.fast, tier.log
    em = tier10k.protect(cache, args.protection, owner, fast, log)[0]
    try:
        sizes = [tuple(map(int, item.split(":"))) for item in args.sizes.split(",") if item]
    except ValueError:
        p.error(f"--sizes takes per-class counts, each optionally with :epochs (250,500:20), got {args.sizes!r}")
    plan = [(k, dataclasses.replace(fast, epochs=e[0]) if e else fast, "fast") for k, *e in sizes]
    if args.long_epochs:
        plan.append((args.per_class, get_recipe("fast", epochs=args.long_epochs), "fast"))
    plan += [(args.per_class, dataclasses.replace(fast, name=f"fast+{v}", **VARIANTS[v]), v) for v in variants]
    rows = []
    for k, recipe, hacker in plan:
        keep = first_per_class(owner.labels, k)
        sub = owner.subset(keep) if k < args.per_class else owner
        sub_em = em[keep] if k < args.per_class else em
        accs = {}
        for prot, images in (("clean", sub.images), (args.protection, sub_em)):
            start = time.perf_counter()
            r = tier10k.train_cell(cache, sub, images, dev, test, prot, "iss-grayscale", "fastnet", recipe, 0,
                                   tier.progress)
            accs[prot] = r
            log(f"{k}/class, {recipe.epochs} epochs, {hacker}, {prot} under grayscale: {100 * r['accuracy']:.1f} % "
                f"({time.perf_counter() - start:.0f} s)")
        ratio = tier10k.ratio(accs[args.protection]["accuracy"], accs["clean"]["accuracy"])
        # "em" keys whatever the protection (the JSON's shape stays that of the first runs); "protection" names it
        rows.append({"per_class": k, "epochs": recipe.epochs, "hacker": hacker, "clean": accs["clean"]["accuracy"],
                     "em": accs[args.protection]["accuracy"], "ratio": ratio,
                     "em_dev_per_epoch": accs[args.protection]["dev_per_epoch"],
                     "clean_dev_per_epoch": accs["clean"]["dev_per_epoch"]})
    stats = colour_stats(owner.images, em)
    meta = {"protection": args.protection, "code_version": code_version(), "date": time.strftime("%Y-%m-%d"),
            "data": args.data, "seed": 0,
            "test": len(test), **provenance()}
    lines = [f"{args.protection} under ISS grayscale at the 10k tier: size and schedule (fastnet, `fast`, seed 0, "
             f"{len(test)} test images; code {meta['code_version']}; {meta['date']})", "",
             f"| owner images / class | epochs | hacker recipe | clean under grayscale % | {args.protection} under "
             "grayscale % | ratio |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['per_class']} | {r['epochs']} | {r['hacker']} | {100 * r['clean']:.1f} | {100 * r['em']:.1f} | "
              f"{'-' if r['ratio'] is None else format(r['ratio'], '.2f')} |" for r in rows]
    lines += ["", f"{args.protection} noise: RMS {stats['noise_rms_255']:.2f}/255; its luma image (what grayscale keeps) "
              f"RMS {stats['luma_rms_255']:.2f}/255, {100 * stats['luma_energy_share']:.1f} % of the noise's energy."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gray_why.json", {**meta, "rows": rows, "noise": stats,
                                              "median_ratio": statistics.median([r["ratio"] for r in rows if r["ratio"] is not None] or [0.0])})
    atomic_write_bytes(out / "gray_why.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
