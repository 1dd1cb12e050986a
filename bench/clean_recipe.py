"""A plain network on the clean owner split with a recipe's fields overridden, scored on the full test
split: e.g. how much of a key family's key cost is its authorized recipe (the mosaic key trains
without translate).

    PYTHONPATH=src python bench/clean_recipe.py --set crop_padding=0 --out docs/bench/keyed10k-mosaic-flip-only.json

Data: CIFAR-10 from ../shared/datasets/cifar10-jpg, the fixed `owner` split (1,000 per class) and
the full test split. Defaults: fastnet, `fast`, init and training seed 1 (table1's hacker seed).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from learnlock.cli import parse_settings
from learnlock.data.splits import load_split
from learnlock.files import atomic_write_json
from learnlock.models import create_model
from learnlock.provenance import provenance
from learnlock.recipe import get_recipe
from learnlock.training import evaluate, fit

DATA = f"folder:{Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'cifar10-jpg'}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--net", default="fastnet")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="recipe field (JSON value)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    overrides = parse_settings(args.set)
    recipe = replace(get_recipe(args.recipe), seed=args.seed, **overrides)
    owner = load_split(args.data, "owner", per_class=args.per_class)
    test = load_split(args.data, "test")
    start = time.time()
    model = fit(create_model(args.net, owner.num_classes, owner.in_channels, seed=args.seed), owner, recipe, progress=False)
    row = {"net": args.net, "recipe": recipe.to_dict(), "overrides": overrides, "train_size": len(owner),
           "test_size": len(test), "accuracy": evaluate(model, test), "seconds": round(time.time() - start, 1),
           **provenance()}
    atomic_write_json(args.out, row)
    print(json.dumps({k: row[k] for k in ("overrides", "accuracy", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
