"""Command line: thin wrappers over the library. Bad input ends in one `error:` line, exit 2."""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import sys
from pathlib import Path

from .errors import LearnlockError
from .provenance import version


def say(message: str) -> None:  # progress and notes go to stderr; results to stdout
    print(message, file=sys.stderr)


def number_list(kind):
    """An argparse type: comma-separated numbers of `kind` (int or float)."""
    def parse(text: str) -> list:
        try:
            return [kind(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


int_list, float_list = number_list(int), number_list(float)


def name_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_recipe_args(p: argparse.ArgumentParser, whose: str = "") -> None:
    """The training recipe flags; `whose` = "authorized" names them --authorized-epochs etc. (protect:
    the recipe the authorized user will train with, apart from a method's own --set epochs)."""
    if whose:
        p.add_argument(f"--{whose}-recipe", dest="recipe", default="cpu", help=f"named recipe of the {whose} network")
        p.add_argument(f"--{whose}-epochs", dest="epochs", type=int, help=f"epochs of the {whose} network's recipe")
        p.add_argument("--epochs", dest="old_epochs", type=int, help=argparse.SUPPRESS)  # deprecated spelling
        p.add_argument("--recipe", dest="old_recipe", help=argparse.SUPPRESS)
    else:
        p.add_argument("--recipe", default="cpu", help="named training recipe (see `learnlock list`)")
        p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")


def recipe_from_args(args):
    from .recipe import get_recipe

    for old, new in (("old_epochs", "epochs"), ("old_recipe", "recipe")):
        if getattr(args, old, None) is not None:
            say(f"note: protect --{new} is deprecated (it reads like the method's own --set epochs); it sets "
                f"the authorized network's recipe: write --authorized-{new}")
            if getattr(args, new) in (None, "cpu"):
                setattr(args, new, getattr(args, old))
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
                 if v is not None}
    return get_recipe(args.recipe, **overrides)


def cmd_evaluate(args) -> None:
    from .scenarios.evaluation import evaluate_specs, results_table

    rows = evaluate_specs(args.train, args.test, args.nets, args.seeds, recipe_from_args(args),
                          per_class=args.per_class, test_per_class=args.test_per_class, subset_seed=args.subset_seed,
                          log=say, out_dir=args.out, progress=not args.no_progress, jobs=args.jobs,
                          cache=cache_from_args(args))
    print(results_table(rows))
    if args.out:
        say(f"\nresults written to {args.out}/results.json")


def parse_settings(pairs: list[str]) -> dict:
    """--set name=value pairs; values parsed as JSON when possible (numbers, true/false, lists)."""
    import json

    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise LearnlockError(f"--set expects name=value, got {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[name.strip().replace("-", "_")] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def cmd_protect(args) -> None:
    from .protections.publish import publish

    settings = parse_settings(args.set)
    if args.rho is not None:
        settings["rho"] = args.rho
    if args.seed is not None:
        settings["seed"] = args.seed
    result = publish(args.method, args.data, args.out, settings=settings, preset=args.preset,
                     per_class=args.per_class, subset_seed=args.subset_seed, authorized=args.authorized,
                     authorized_arch=args.authorized_arch, authorized_seeds=args.authorized_seeds,
                     key_seed=args.key_seed, key_secret=args.key_secret, key_out=args.key_out,
                     include_weights=args.include_weights, recipe=recipe_from_args(args), overwrite=args.overwrite,
                     progress=not args.no_progress, log=say)
    print(f"published {result['size']} images to {result['path']}")
    for path, key in result["keys"]:
        say(f"authorized key: {path} (fingerprint {key.fingerprint[:16]}...); give it only to the "
            "authorized user")
    if result["diagnostics"]:
        print("diagnostics: " + ", ".join(f"{k} {v:.3f}" for k, v in result["diagnostics"].items()))
    for warning in result["warnings"]:
        say(f"warning: {warning}")
    print_report_line(result["path"])


def cmd_train(args) -> None:
    from .scenarios import train_published

    result = train_published(args.data, args.authorized, test=args.test, test_per_class=args.test_per_class,
                             out=args.out, progress=not args.no_progress, log=say)
    if args.out:
        say(f"trained weights written to {args.out}")
    if result["accuracy"] is not None:
        print(f"test accuracy: {100 * result['accuracy']:.2f}% on {result['test_size']} images of {result['test']}")


def hacker_list(text: str, attack: str):
    from .scenarios import Hacker

    out = []
    for item in name_list(text or ""):
        arch, _, seed = item.partition(":")
        if not (seed or "1").lstrip("-").isdigit():
            raise LearnlockError(f"hackers are given as ARCH:SEED with an integer seed (e.g. cnn:1), got {item!r}")
        out.append(Hacker(attack, arch, int(seed or 1)))
    return out


def cache_from_args(args):
    """--cache DIR, else OUT/cells when the command writes to --out, else no cache."""
    from pathlib import Path

    return args.cache or (Path(args.out) / "cells" if getattr(args, "out", None) else None)


def cmd_table1(args) -> None:
    from .scenarios import table1

    result = table1(args.published, args.authorized, test=args.test, test_per_class=args.test_per_class,
                    hackers=hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill"),
                    seeds=args.seeds, hacker_recipe=recipe_from_args(args), out=args.out,
                    progress=not args.no_progress, log=say, jobs=args.jobs, cache=cache_from_args(args))
    print("\nTest accuracy % (mean ± std over seeds) and learnability ratio (acc - chance) / (clean acc - chance):")
    a, h = result.recipe, result.hacker_recipe
    print(f"train {result.train_size} images of {result.source}, test {result.test_size} clean images, authorized "
          f"{result.key} trained with the manifest's recipe {a.name} ({a.epochs} epochs), hackers with recipe "
          f"{h.name} ({h.epochs} epochs)\n")
    if (a.epochs, a.lr, a.batch_size) != (h.epochs, h.lr, h.batch_size):
        say(f"warning: the hackers train with another recipe than the authorized network ({h.epochs} vs {a.epochs} "
            f"epochs, lr {h.lr} vs {a.lr}, batch {h.batch_size} vs {a.batch_size}); give --epochs etc. to match")
    print(result.markdown())
    for name, verdict in result.verdict().items():
        print(f"\n{name}: {verdict}")
    if args.out:
        say(f"\nwritten: {args.out}/table1.json, table1.md, authorized_vs_hackers.png, grid.png")
        for published in args.published:
            print_report_line(published, args.out)


def parse_attack_settings(pairs: list[str]) -> dict[str, dict]:
    """--set ATTACK.NAME=VALUE pairs -> {attack: {name: value}}; values parsed as JSON when possible."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        attack, dot, field = name.partition(".")
        if not sep or not dot:
            raise LearnlockError(f"--set expects ATTACK.NAME=VALUE (e.g. iss-jpeg.quality=20), got {pair!r}")
        out.setdefault(attack.strip(), {}).update(parse_settings([f"{field}={value}"]))
    return out


def cmd_audit(args) -> None:
    """Train hacker networks on a published dataset under each attack (retrain, distill,
augmentations, ISS, UEraser, adversarial training, diffusion purification, weight-space recovery)
and report clean test accuracy beside the clean baseline. Finished cells are cached in --cache
(default OUT/cells); rerun the same command to resume.

example:
  learnlock audit runs/demo/published --test fashion-mnist --test-per-class 100 \\
      --aux fashion-mnist --aux-per-class 20 --authorized runs/demo/key.safetensors \\
      --attacks retrain,distill,iss-jpeg,adversarial-training --nets cnn,lenet --seeds 0,1 \\
      --set iss-jpeg.quality=10 --out runs/demo/audit
attacks that need --aux: purify, purify-diffpure, recover, recover-random; distill needs the key (--authorized)"""
    from .scenarios.audit import audit_folder

    result = audit_folder(args.published, out_dir=args.out, test=args.test, test_per_class=args.test_per_class,
                          clean=args.clean, clean_per_class=args.clean_per_class, aux=args.aux,
                          aux_split=args.aux_split, aux_per_class=args.aux_per_class, subset_seed=args.subset_seed,
                          authorized=args.authorized, attacks=args.attacks, nets=args.nets,
                          seeds=args.seeds, recipe=recipe_from_args(args), settings=parse_attack_settings(args.set),
                          progress=not args.no_progress, log=say, jobs=args.jobs, cache=cache_from_args(args))
    print("\nClean test accuracy % (mean ± std over seeds) and learnability ratio "
          "(acc - chance) / (clean acc - chance); lower = the protection holds:\n")
    print(result["table"])
    if result["skipped"]:
        print(f"\nskipped: {'; '.join(result['skipped'])}")
    say(f"\nwritten: {args.out}/audit.json, audit.md, audit.png")
    print_report_line(args.published, args.out)


def cmd_certify(args) -> None:
    """Train a surrogate on the published data (or load one), sample N weight vectors
theta + sigma*N(0,I), record their clean test accuracies and bound the q-quantile accuracy of any
smoothed classifier within L2 distance eta (Wang et al. 2024, PUE).

example:
  learnlock certify runs/pub --test cifar10 --arch cnn --n 1000 --out runs/cert
  (lower certified learnability = the protection holds for every net near the surrogate)"""
    from .scenarios.certify import DEFAULT_ETAS, CertifySettings, certify_folder

    settings = CertifySettings(q=args.q, sigma=args.sigma, n=args.n, alpha=args.alpha,
                               etas=tuple(args.etas) if args.etas else DEFAULT_ETAS, seed=args.seed)
    cert = certify_folder(args.published, settings, out_dir=args.out, recipe=recipe_from_args(args), test=args.test,
                          test_per_class=args.test_per_class, subset_seed=args.subset_seed, arch=args.arch,
                          weights=args.weights, train_sigma=args.train_sigma, train_draws=args.train_draws,
                          progress=not args.no_progress, log=say, cache=args.cache)
    print(cert.markdown())
    say(f"written: {args.out}/certify.json, certify.md, certify.png")
    print_report_line(args.published, args.out)


def cmd_report(args) -> None:
    """Write one self-contained HTML page (and the same content as JSON beside it) for a published
dataset and the runs made on it: a verdict on top (whom the data resist, what breaks them, what was
not measured), what was protected, who learns, what breaks it, the threat model and provenance.
Each RUN is a table1, audit, certify or federated output folder, or a folder holding them (those
of this published dataset are found by its manifest's fingerprint).

example:
  learnlock report runs/demo/keyed runs/demo/table1-keyed runs/demo/audit --out runs/demo/report.html
  learnlock report runs/demo/keyed runs/demo --out report.html --originals fashion-mnist"""
    from .report.html import write_report

    content = write_report(args.published, args.runs, args.out, originals=args.originals)
    print(f"{content['verdict']['headline']}")
    print(f"report: {args.out} ({len(content['runs'])} run{'s' if len(content['runs']) != 1 else ''}: "
          + (", ".join(f"{r['kind']} {r['path']}" for r in content["runs"]) or "none") + ")")
    say(f"written: {args.out}, {Path(args.out).with_suffix('.json')}")


def print_report_line(published, *runs) -> None:
    """The `learnlock report` line that shows what a command wrote."""
    from .report.html import report_command

    say(f"see it: {report_command(published, runs)}")


def cmd_list(args) -> None:
    from .attacks import list_attacks
    from .data import list_datasets
    from .models import list_models
    from .protections import get_protection, list_protections
    from .recipe import RECIPES

    print("datasets:", ", ".join(list_datasets()))
    print("models:  ", ", ".join(list_models()))
    print("protections (--method NAME, --set SETTING=VALUE, --preset NAME):")
    for name in list_protections():
        print(f"  {get_protection(name).describe()}")
    print("attacks:", ", ".join(list_attacks()))
    print("recipes: ")
    for name, r in RECIPES.items():
        print(f"  {name}: {r.epochs} epochs, {r.optimizer} lr {r.lr}, batch {r.batch_size}, {r.schedule}, {r.augment}")


def cmd_federated(args) -> None:
    """Split --data among clients; each client protects only its own shard against the global
network; the server trains the global network on the union of the published shards; hackers train
on the union (Normal) or distil the global network (Distill).

example:
  learnlock federated --data cifar10 --per-class 100 --test-per-class 100 \\
      --clients 2 --split classes --global-arch cnn --global-seed 1234 --out runs/fed"""
    from .scenarios.federated import run_federated, table9_markdown

    settings = parse_settings(args.set)
    if args.rho is not None:
        settings["rho"] = args.rho
    result = run_federated(args.data, args.out, global_arch=args.global_arch, global_seed=args.global_seed,
                           global_secret=args.global_secret, test=args.test, per_class=args.per_class,
                           test_per_class=args.test_per_class, subset_seed=args.subset_seed, clients=args.clients,
                           split=args.split, split_seed=args.split_seed, recipe=recipe_from_args(args),
                           method=args.method, preset=args.preset, settings=settings,
                           hackers=hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill"),
                           progress=not args.no_progress, log=say, jobs=args.jobs, cache=args.cache)
    if result["key_path"]:
        say(f"global key: {result['key_path']} (the server keeps it)")
    print(f"\nTest accuracy % of the {result['key'].arch} global network and of the hackers "
          f"({result['method']}, {result['train_size']} images of {result['source']}):\n")
    print(table9_markdown(result))
    if result["client_probe_acc"] is not None:
        print(f"\nclient probe: a linear probe tells the client from the perturbation alone with accuracy "
              f"{result['client_probe_acc']:.2f} (majority share {result['client_probe_chance']:.2f}); high "
              "means each client's noise is a signature a network can use as a shortcut")
    say(f"\nwritten: {args.out}/federated.json, federated.md, federated.png, client_*/ (published shards)")
    for client in result["published"]:
        print_report_line(Path(args.out) / client["path"], args.out)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that keeps each parameter's flag (`flags`: dest -> --flag), so a library
    message naming `key_out` shows --key-out."""

    def __init__(self, *args, **kwargs):
        self.flags: dict[str, str] = {}  # before argparse adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.flags[action.dest] = action.option_strings[0] if action.option_strings else action.dest.upper()
        return action


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="learnlock", description=__doc__)
    parser.add_argument("--version", action="version", version=f"learnlock {version()}")
    # examples in epilogs keep their line breaks
    sub = parser.add_subparsers(dest="command", required=True, parser_class=functools.partial(
        Parser, formatter_class=argparse.RawDescriptionHelpFormatter))

    p = sub.add_parser("evaluate", help="train networks on a dataset and report clean test accuracy")
    p.add_argument("--train", required=True, help="training set spec, e.g. fashion-mnist, folder:PATH")
    p.add_argument("--test", help="test set spec (default: the test split of --train)")
    p.add_argument("--nets", type=name_list, default=["cnn"], help="comma-separated model names")
    p.add_argument("--seeds", type=int_list, default=[0], help="comma-separated init/data seeds")
    p.add_argument("--per-class", type=int, help="train on a seeded subset of N images per class")
    p.add_argument("--test-per-class", type=int, help="test on a seeded subset of N images per class")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the per-class subsets")
    p.add_argument("--out", help="folder for results.json (a rerun resumes from it)")
    p.add_argument("--cache", help="cell cache folder: every trained (net, seed) is kept there and found again by "
                   "any run with the same data, recipe and code (default: OUT/cells with --out, none without)")
    add_recipe_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("protect", help="publish a protected copy of a dataset")
    p.add_argument("--method", default="uge", help="protection method (see `learnlock list`)")
    p.add_argument("--data", required=True, help="dataset spec to protect (its train split)")
    p.add_argument("--out", required=True, help="folder for the published dataset (must not exist)")
    p.add_argument("--authorized", nargs="+", help="key file(s) (.safetensors NetSpec) or architecture name(s)")
    p.add_argument("--authorized-arch", type=name_list, metavar="ARCH[,ARCH...]",
                   help="several authorized networks by architecture, e.g. resnet18,cnn (with --authorized-seeds)")
    p.add_argument("--authorized-seeds", type=int_list, metavar="N[,N...]",
                   help="init seed of each --authorized-arch network, e.g. 0,1 (one value: the same for all)")
    p.add_argument("--key-seed", type=int, help="init seed of an authorized architecture given by name")
    p.add_argument("--key-secret", help="pass phrase hashed into the init seed (instead of --key-seed)")
    p.add_argument("--key-out", help="where to write a derived key (default OUT.key.safetensors)")
    p.add_argument("--include-weights", action="store_true",
                   help="also put the key's weights in OUT (makes the key public: no protection, no authentication)")
    p.add_argument("--preset", help="uge preset: paper (default), unlearn, undistill, paper-no-ud, contrast, learnlock")
    p.add_argument("--rho", type=float, help="L-inf radius in [0,1] pixel units (e.g. 0.04 or 8/255=0.0314)")
    p.add_argument("--seed", type=int, help="protection seed")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any method setting, repeatable")
    p.add_argument("--per-class", type=int, help="protect a seeded subset of N images per class")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing published dataset at OUT")
    add_recipe_args(p, "authorized")
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("train", help="train the authorized network on a published dataset")
    p.add_argument("--authorized", required=True, help="the key file (.safetensors) the protector gave you")
    p.add_argument("--data", required=True, help="published dataset folder")
    p.add_argument("--test", help="clean test set spec to report accuracy on")
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--out", help="write the trained weights here (.safetensors)")
    p.add_argument("--device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("table1", help="authorized vs hacker accuracy on published datasets (UGE Table 1)")
    p.add_argument("--published", nargs="+", required=True, help="published dataset folder(s) of one source")
    p.add_argument("--authorized", required=True, help="the authorized key file (.safetensors)")
    p.add_argument("--test", help="clean test set spec (default: the test split of the source)")
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--hackers", default="cnn:1,lenet:1,resnet8:1", help="ARCH:SEED,... trained from scratch")
    p.add_argument("--distill", default="cnn:1", help="ARCH:SEED,... distilled from the authorized net")
    p.add_argument("--seeds", type=int_list, default=[0], help="evaluation seeds (shift hacker seeds)")
    p.add_argument("--out", help="folder for table1.json, table1.md and PNG plots")
    p.add_argument("--cache", help="cell cache folder: every finished training is kept there at once and a rerun "
                   "of the same command trains only what is missing (default: OUT/cells with --out, none without; "
                   "a code change retrains)")
    add_recipe_args(p)
    p.set_defaults(func=cmd_table1)

    p = sub.add_parser("audit", help="score a published dataset against every attack", description=cmd_audit.__doc__)
    p.add_argument("published", help="published dataset folder")
    p.add_argument("--test", help="clean test set spec (default: the test split of the published data's source)")
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--clean", help="the unprotected source, for the clean baseline (default: from the manifest)")
    p.add_argument("--clean-per-class", type=int)
    p.add_argument("--aux", help="attacker's auxiliary clean set spec (items of the published set are removed)")
    p.add_argument("--aux-split", default="train")
    p.add_argument("--aux-per-class", type=int, help="seeded subset of N aux images per class")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--authorized", help="the key file; enables the authorized row and distill")
    p.add_argument("--attacks", default="all", help="all, or comma-separated attack names")
    p.add_argument("--nets", type=name_list, default=["cnn"], help="hacker architectures")
    p.add_argument("--seeds", type=int_list, default=[0])
    p.add_argument("--set", action="append", metavar="ATTACK.NAME=VALUE", help="an attack setting, repeatable")
    p.add_argument("--out", required=True, help="folder for audit.json, audit.md, audit.png and the cell cache")
    p.add_argument("--cache", help="cell cache folder: every finished cell is kept there at once and a rerun trains "
                   "only what is missing (default: OUT/cells; share one folder between table1 and audit; a code "
                   "change retrains)")
    add_recipe_args(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("certify", help="certified (q, eta)-learnability of a published dataset (parametric smoothing)",
                       description=cmd_certify.__doc__)
    p.add_argument("published", help="folder written by `learnlock protect`")
    p.add_argument("--test", help="clean test set spec (default: the published source)")
    p.add_argument("--test-per-class", type=int, help="certify on a seeded subset of N test images per class")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--arch", default="resnet18", help="surrogate architecture to train on the published data")
    p.add_argument("--weights", help="a trained surrogate (NetSpec .safetensors) instead of training one")
    p.add_argument("--train-sigma", type=float,
                   help="weight noise while training the surrogate (default: --sigma, as in the paper; 0: none)")
    p.add_argument("--train-draws", type=int, default=1, help="weight draws averaged per training step")
    p.add_argument("--q", type=float, default=0.9, help="certified quantile (default 0.9)")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing noise std on every parameter (default 0.25)")
    p.add_argument("--n", type=int, default=1000, help="weight samples (default 1000)")
    p.add_argument("--alpha", type=float, default=0.01, help="1 - confidence (default 0.01)")
    p.add_argument("--etas", type=float_list, help="comma-separated L2 radii (default: the paper's grid)")
    p.add_argument("--seed", type=int, default=0, help="surrogate init and weight-sample seed")
    p.add_argument("--out", required=True, help="folder for certify.json/.md/.png (a rerun resumes)")
    p.add_argument("--cache", help="cell cache folder: the trained surrogate is kept there and found again by a rerun "
                   "(default: OUT/cells; a code change retrains)")
    add_recipe_args(p)
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("federated", description=cmd_federated.__doc__,
                       help="UGE in federated learning: clients protect their shards against one global network (Table 9)")
    p.add_argument("--data", required=True, help="dataset spec (its train split is shared out)")
    p.add_argument("--test", help="clean test set spec (default: the test split of --data)")
    p.add_argument("--per-class", type=int, help="use a seeded subset of N training images per class")
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--clients", type=int, default=2, help="number of clients (default 2)")
    p.add_argument("--split", default="classes", help="classes | iid | dirichlet:ALPHA (default classes)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the iid / dirichlet split")
    p.add_argument("--global-arch", required=True, help="architecture name of the global network, or its key file")
    p.add_argument("--global-seed", type=int, help="init seed of the global network")
    p.add_argument("--global-secret", help="pass phrase hashed into the init seed (instead of --global-seed)")
    p.add_argument("--method", default="uge", help="protection each client applies (default uge)")
    p.add_argument("--preset", help="preset of the protection (uge: paper, the default, ...)")
    p.add_argument("--rho", type=float, help="L-inf radius in [0,1] pixel units")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a protection setting, repeatable")
    p.add_argument("--hackers", default="cnn:1", help="ARCH:SEED,... trained on the published union")
    p.add_argument("--distill", default="cnn:1", help="ARCH:SEED,... distilled from the trained global network")
    p.add_argument("--out", required=True, help="run folder: published shards, cell cache, reports (a rerun resumes)")
    p.add_argument("--cache", help="cell cache folder: every trained cell is kept there and a rerun trains only what "
                   "is missing (default: OUT/cells; a code change retrains)")
    add_recipe_args(p)
    p.set_defaults(func=cmd_federated, flag_aliases={"authorized": "--global-arch", "key_seed": "--global-seed",
                                                     "key_secret": "--global-secret"})

    for p in sub.choices.values():
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for name in ("evaluate", "table1", "audit", "federated"):  # independent cells: learnlock.jobs
        sub.choices[name].add_argument("--jobs", type=int, default=1, help="cells trained at once in worker "
                                       "processes, spread over the GPUs (default 1; results as with 1)")
    p = sub.add_parser("report", help="one self-contained HTML page (+ JSON) for a published dataset and its runs",
                       description=cmd_report.__doc__)
    p.add_argument("published", help="published dataset folder")
    p.add_argument("runs", nargs="*", metavar="RUN", help="table1 / audit / certify / federated output folders, or "
                   "folders that hold them (found by the published manifest's fingerprint)")
    p.add_argument("--out", required=True, help="the HTML file to write (the JSON goes beside it, .json)")
    p.add_argument("--originals", metavar="DATA_SPEC", help="the clean originals (a dataset spec; its train split) "
                   "for PSNR, SSIM and the residual (default: the source the manifest names, when it is a local "
                   "folder or npz file)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list datasets, models and recipes")
    p.set_defaults(func=cmd_list)
    for p in sub.choices.values():
        p.set_defaults(command_parser=p)  # main names this command's flags in its messages
    return parser


def as_flags(message: str, parser: Parser, aliases: dict | None = None) -> str:
    """A library message names parameters in backticks (`key_out`); show this command's flag (--key-out)."""
    flags = {**parser.flags, **(aliases or {})}
    return re.sub(r"`([a-z_]+)`", lambda m: flags.get(m.group(1), m.group(0)), message)


@contextlib.contextmanager
def warnings_as_lines(flags):
    """Each LearnlockWarning the library raises becomes one `warning:` line, every time."""
    import warnings

    from .errors import LearnlockWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", LearnlockWarning)
        shown = warnings.showwarning

        def show(message, category, *rest, **kw):
            if issubclass(category, LearnlockWarning):
                say(f"warning: {flags(str(message))}")
            else:
                shown(message, category, *rest, **kw)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = functools.partial(as_flags, parser=args.command_parser, aliases=getattr(args, "flag_aliases", None))
    try:
        from .device import using

        # the one place a run's device is chosen, for this command only
        with using(args.device) if getattr(args, "device", None) else contextlib.nullcontext(), \
                warnings_as_lines(flags):
            args.func(args)
    except LearnlockError as e:
        say(f"error: {flags(str(e))}")
        return 2
    except OSError as e:  # the library checks outputs before work; this is what changed during it
        where = f" {e.filename}" if e.filename else ""
        say(f"error: cannot read or write{where}: {e.strerror or e}; free space or fix the permissions and rerun "
            "(finished work is kept where a command resumes)")
        return 2
    except KeyboardInterrupt:
        say("interrupted; rerun the same command to resume where results were saved")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
