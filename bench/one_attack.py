"""One attack on one published folder, one net and seed, scored on the source's test split: a
single audit row without the audit's clean and authorized rows (for a cache made by older code,
whose rows would all be trained again). Writes the row and the attack's report as JSON.

    PYTHONPATH=src python bench/one_attack.py runs/keyed10k-r16/published runs/keyed10k-r16/key.safetensors \
        key-search-gradient --clean-accuracy 0.757 --out docs/bench/keyed10k-ksg-r16.json

The ratio is against --clean-accuracy (the same net and recipe on the clean owner images, e.g. the
audit's clean row).
"""

from __future__ import annotations

import argparse
import json
import time

from learnlock.attacks import AttackContext, create_attack
from learnlock.cli import parse_settings
from learnlock.files import atomic_write_json
from learnlock.provenance import provenance
from learnlock.recipe import get_recipe
from learnlock.scenarios import open_published
from learnlock.training import evaluate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("published")
    p.add_argument("key")
    p.add_argument("attack")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="attack setting (JSON value)")
    p.add_argument("--net", default="fastnet")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clean-accuracy", type=float, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    settings = parse_settings(args.set)
    opened = open_published(args.published, key=args.key)
    attack = create_attack(args.attack, **settings)
    start = time.time()
    model = attack.train(opened.data, args.net, args.seed, get_recipe(args.recipe),
                         AttackContext(scheme=opened.manifest["extra"].get("key"), teacher=opened.key.build(),
                                       rho=opened.manifest.get("rho"), progress=False), progress=False)
    acc = evaluate(model, opened.test)
    chance = 1 / opened.data.num_classes
    row = {"published": args.published, "attack": args.attack, "settings": settings, "net": args.net,
           "recipe": args.recipe, "seed": args.seed, "test_size": len(opened.test), "accuracy": acc,
           "clean_accuracy": args.clean_accuracy, "ratio": (acc - chance) / (args.clean_accuracy - chance),
           "report": attack.report(), "seconds": round(time.time() - start, 1), **provenance()}
    atomic_write_json(args.out, row)
    print(json.dumps({k: row[k] for k in ("attack", "accuracy", "ratio", "report", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
