"""Command line: thin wrappers over the library. Bad input ends in one `error:` line, exit 2."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .errors import LearnlockError


def int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def name_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="cpu", help="named training recipe (see `learnlock list`)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")


def recipe_from_args(args):
    from .training import get_recipe

    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                     ("batch_size", args.batch_size), ("device", args.device))
                 if v is not None}
    return get_recipe(args.recipe, **overrides)


def cmd_evaluate(args) -> None:
    from .data import load_dataset
    from .evaluation import evaluate_nets, results_table
    from .models import list_models

    recipe = recipe_from_args(args)
    for net in args.nets:
        if net not in list_models():
            raise LearnlockError(f"unknown network {net!r}; choose from: {', '.join(list_models())}")
    train = load_dataset(args.train, "train", per_class=args.per_class, seed=args.subset_seed)
    test = load_dataset(args.test or args.train, "test", per_class=args.test_per_class,
                        seed=args.subset_seed)
    print(f"train: {train.source} ({len(train)} images), test: {test.source} ({len(test)} images), "
          f"recipe {recipe.name}: {recipe.epochs} epochs on {recipe.resolved_device()}", file=sys.stderr)
    rows = evaluate_nets(train, test, args.nets, args.seeds, recipe, out_dir=args.out,
                         progress=not args.no_progress)
    print(results_table(rows))
    if args.out:
        print(f"\nresults written to {args.out}/results.json", file=sys.stderr)


def cmd_list(args) -> None:
    from .data import list_datasets
    from .models import list_models
    from .training import RECIPES

    print("datasets:", ", ".join(list_datasets()))
    print("models:  ", ", ".join(list_models()))
    print("recipes: ")
    for name, r in RECIPES.items():
        print(f"  {name}: {r.epochs} epochs, {r.optimizer} lr {r.lr}, batch {r.batch_size}, "
              f"{r.schedule}, {r.augment}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learnlock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="train networks on a dataset and report clean test accuracy")
    p.add_argument("--train", required=True, help="training set spec, e.g. fashion-mnist, folder:PATH")
    p.add_argument("--test", help="test set spec (default: the test split of --train)")
    p.add_argument("--nets", type=name_list, default=["cnn"], help="comma-separated model names")
    p.add_argument("--seeds", type=int_list, default=[0], help="comma-separated init/data seeds")
    p.add_argument("--per-class", type=int, help="train on a seeded subset of N images per class")
    p.add_argument("--test-per-class", type=int, help="test on a seeded subset of N images per class")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the per-class subsets")
    p.add_argument("--out", help="folder for results.json (a rerun resumes from it)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_recipe_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("list", help="list datasets, models and recipes")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LearnlockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where results were saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
