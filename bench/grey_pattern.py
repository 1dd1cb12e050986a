"""Issue 23 section 3: `keyed` with `noise: pattern` and a block key on grey images, one candidate on
the dev split (what BENCHMARKS.md's "A class pattern for the grey-image key" chose from).

    .venv/bin/python bench/grey_pattern.py --k 4 --dims 4 --rho 32 --seed 0 --period 4 \
        [--rows authorized,wrong,cnn,fastnet,resnet8,lenet60] [--cache runs/cells-grey-pattern] [--out FILE.jsonl]

Data: Fashion-MNIST's fixed splits (learnlock.data.splits), 100 per class: owner (protected) and dev
(every number here; nothing on test). The authorized key: `cnn` init seed 1234 behind the block key
(as the go/no-go's), `seed` is the pattern's draw. Rows: the authorized network and a wrong key
(another secret of the same scheme) with the family's authorized recipe, plain hackers (cnn, fastnet,
resnet8, lenet) with `cpu` at training seed 1, and lenet for 60 epochs (under `cpu`'s 15 it underfits
Fashion-MNIST at about 50 %). Each row is a cell of learnlock.cells.CellCache (a rerun trains
nothing); one JSON line per candidate goes to --out, with PSNR and the share of the change outside S.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from learnlock import NetSpec
from learnlock.cells import CellCache, cell_inputs
from learnlock.data.splits import load_split
from learnlock.keys.keyed import keyed_spec
from learnlock.protections import ProtectionContext, create_protection
from learnlock.training import evaluate, fit, get_recipe

ROOT = Path(__file__).resolve().parents[1]
HACKERS = {"cnn": ("cnn", {}), "fastnet": ("fastnet", {}), "resnet8": ("resnet8", {}), "lenet": ("lenet", {}),
           "lenet60": ("lenet", {"epochs": 60}),
           # without random crops: does lenet (no global pooling: its head sees positions) ignore the
           # pattern only because crops show it at k^2 phases?
           "lenet60-flip": ("lenet", {"epochs": 60, "augment": "flip"})}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--dims", type=int, default=4)
    p.add_argument("--rho", type=float, default=32, help="L-inf budget in 1/255 steps (0: the clean baselines)")
    p.add_argument("--period", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="the pattern's draw")
    p.add_argument("--rows", default="authorized,wrong,cnn,fastnet,resnet8,lenet60")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cells-grey-pattern")
    p.add_argument("--out", type=Path, default=None, help="append the candidate's JSON line here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ("authorized", "wrong", *HACKERS)]
    if unknown:
        p.error(f"unknown row {unknown[0]!r}; rows are authorized, wrong, {', '.join(HACKERS)}")
    torch.set_num_threads(args.threads)
    owner = load_split(args.data, "owner", per_class=args.per_class)
    dev = load_split(args.data, "dev", per_class=args.per_class)
    base = NetSpec.create("cnn", owner.num_classes, owner.in_channels, seed=1234)
    prot = create_protection("keyed", ProtectionContext([base], recipe="cpu"), seed=args.seed,
                             rho=(args.rho or 1) / 255, family="block", k=args.k, dims=args.dims, noise="pattern",
                             period=args.period)
    prot.progress = False
    pub = owner.with_images(prot.apply(owner)) if args.rho else owner
    key = prot.issued_keys(owner)[0]
    wrong = keyed_spec(NetSpec.create("cnn", owner.num_classes, owner.in_channels, seed=4321), "block",
                       key.kwargs["image_size"], key.kwargs["key_settings"])
    change = pub.images.double() - owner.images.double()
    out = {"k": args.k, "dims": args.dims, "rho": args.rho, "period": args.period, "seed": args.seed,
           "psnr_db": round(float(10 * torch.log10(255 ** 2 / change.pow(2).mean().clamp_min(1e-12))), 2),
           "outside_energy_share": prot.residual["outside_energy_share"] if args.rho else 0.0}
    cache = CellCache(args.cache)
    for row in rows:
        if row in ("authorized", "wrong"):
            spec, recipe = (key if row == "authorized" else wrong), prot.recipe
        else:
            arch, more = HACKERS[row]
            spec, recipe = NetSpec.create(arch, owner.num_classes, owner.in_channels, seed=1), get_recipe("cpu", **more)
        inputs = cell_inputs(row=row, data=pub, net=spec, recipe=recipe, dev=dev)

        def compute():
            torch.manual_seed(1)
            return {"dev_accuracy": evaluate(fit(spec.build(), pub, recipe, progress=False), dev)}

        out[row] = round(100 * cache.run("grey-pattern", inputs, compute)["dev_accuracy"], 1)
        print(f"[cell] {row}: dev {out[row]} %", flush=True)
    print(json.dumps(out), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
