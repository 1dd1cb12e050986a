"""Issue 23, section 1: the go/no-go of the default colour key at the 1k tier, against attackers
that know the scheme (key search, key estimation, orthogonal projection, adversarial training at
eps = rho), an owner who leaks clean originals or the trained network (leaked-pairs,
distill-proxy), and an unkeyed `em` row at the same 32/255 budget.

    .venv/bin/python bench/keyed_gonogo.py protect          # the published sets (resumable)
    .venv/bin/python bench/keyed_gonogo.py run [--test dev|test] [--only ROW,...]
    .venv/bin/python bench/keyed_gonogo.py report            # BENCHMARKS table + docs/bench/keyed-gonogo/*.json

Data (learnlock.data.splits): owner = `owner` split, 100 per class (what is protected); aux =
`aux` split, 100 per class (the attacker's clean images; disjoint from owner); dev = `dev` split,
100 per class (every choice); test = `test` split, 100 per class (the frozen row, nothing chosen
on it). Protection: `keyed` with its defaults (colour key, luma 0.9, 32/255, cnn surrogate, at
most 20 min-min rounds), authorized base `cnn` init seed 1234 (the key layer is seeded from its
fingerprint, as the CLI's --key-seed 1234 does); `em` at rho 32/255 with a cnn surrogate and the
same 20 rounds, protection seed 0. Every network trains with the `cpu` recipe (15 epochs) at
training seed 1 unless a row says otherwise.

Ratios: (acc - 0.1) / (clean acc - 0.1), clean acc = the same net and recipe on the clean owner
images (the authorized row: the same keyed network on the clean owner images).

Caching: every measured cell goes through learnlock.cells.CellCache (runs/cells-keyed, keyed by
its inputs and the code version). The published sets are cached apart under
runs/cells-keyed/published/ (keyed by their settings; the min-min is the slow part and must not
rerun when unrelated code changes); their manifests record the code that made them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch

from learnlock import NetSpec
from learnlock.attacks import AttackContext, create_attack
from learnlock.cells import CellCache
from learnlock.data.published import load_published
from learnlock.data.splits import load_split
from learnlock.keys import load_key
from learnlock.protections import ProtectionContext, create_protection
from learnlock.provenance import atomic_write_json, provenance
from learnlock.training import evaluate, fit, get_recipe

ROOT = Path(__file__).resolve().parents[1]
CIFAR = f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}"
OUT = ROOT / "runs" / "cells-keyed"
DOCS = ROOT / "docs" / "bench" / "keyed-gonogo"
PER_CLASS = 100
KEY_SEED = 1234
PROT_SEED = 0
TRAIN_SEED = 1
PROTECTIONS = {  # name: (method, settings)
    "keyed": ("keyed", {}),                                              # the defaults
    "em-r32": ("em", {"rho": 32 / 255, "surrogate": "cnn", "max_rounds": 20}),
}


def splits(test_split: str):
    owner = load_split(CIFAR, "owner", per_class=PER_CLASS)
    aux = load_split(CIFAR, "aux", per_class=PER_CLASS)
    test = load_split(CIFAR, test_split, per_class=PER_CLASS)
    return owner, aux, test


def key_base(data):
    return NetSpec.create("cnn", data.num_classes, data.in_channels, seed=KEY_SEED)


def protect(name: str, owner):
    """(published dataset, manifest, issued key or None, seconds); cached by settings."""
    method, settings = PROTECTIONS[name]
    out = OUT / "published" / name
    meta = OUT / "published" / f"{name}.json"
    key_path = OUT / "published" / f"{name}.key.safetensors"
    want = {"method": method, "settings": settings, "seed": PROT_SEED, "data": owner.fingerprint(),
            "key_seed": KEY_SEED}
    if not (out.exists() and meta.exists() and json.loads(meta.read_text()).get("want") == want):
        shutil.rmtree(out, ignore_errors=True)
        work = OUT / "work" / name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        prot = create_protection(method, ProtectionContext([key_base(owner)], recipe="cpu"), seed=PROT_SEED,
                                 **settings)
        prot.protect(owner, out, workdir=work)
        keys = prot.issued_keys(owner)
        if keys:
            keys[0].save(key_path, overwrite=True)
        atomic_write_json(meta, {"want": want, "seconds": round(time.perf_counter() - t0, 1), **provenance()})
        print(f"[protect] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    pub, manifest = load_published(out)
    key = load_key(key_path) if key_path.exists() else None
    return pub, manifest, key, json.loads(meta.read_text())["seconds"]


def cmd_protect(args):
    torch.set_num_threads(args.threads)
    owner, _, _ = splits("dev")
    for name in PROTECTIONS:
        protect(name, owner)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("protect", "run", "report"):
        s = sub.add_parser(name)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--test", default="dev", choices=["dev", "test"])
        s.add_argument("--only", default="")
    args = p.parse_args(argv)
    globals()[f"cmd_{args.cmd}"](args)


if __name__ == "__main__":
    main()
