"""The command line's flags: one parser per subcommand, the flags several share in parent parsers
(`parents`), and the argparse types they use. `learnlock.cli` holds what each command does.

    parser = build_parser({"evaluate": cmd_evaluate, ...})   # every subcommand's function by name
"""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from .provenance import version


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
        # removed spellings, kept only to say what replaced them
        p.add_argument("--epochs", dest="old_epochs", type=int, help=argparse.SUPPRESS)
        p.add_argument("--recipe", dest="old_recipe", help=argparse.SUPPRESS)
    else:
        p.add_argument("--recipe", default="cpu", help="named training recipe (see `learnlock list`)")
        p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that keeps each parameter's flag (`flags`: dest -> --flag), its parents'
    too, so a library message naming `key_out` shows --key-out."""

    def __init__(self, *args, **kwargs):
        self.flags: dict[str, str] = {}  # before argparse adds --help
        super().__init__(*args, **kwargs)
        for parent in kwargs.get("parents", ()):
            self.flags.update(parent.flags)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.flags[action.dest] = action.option_strings[0] if action.option_strings else action.dest.upper()
        return action


def parent(*arguments: tuple[tuple, dict]) -> Parser:
    """A parent parser holding `arguments` ((flags, options) pairs), shared by several subcommands."""
    p = Parser(add_help=False)
    for flags, options in arguments:
        p.add_argument(*flags, **options)
    return p


def parents() -> dict[str, Parser]:
    """The flags several subcommands share, by group."""
    recipe = parent((("--no-progress",), {"action": "store_true", "help": "hide progress bars"}))
    add_recipe_args(recipe)
    return {
        "test": parent(
            (("--test",), {"help": "clean test set spec (default: the test split of the source)"}),
            (("--test-per-class",), {"type": int, "help": "test on a seeded subset of N images per class"}),
            (("--subset-seed",), {"type": int, "default": 0, "help": "seed of the per-class subsets (default 0)"})),
        "recipe": recipe,
        "cells": parent(
            (("--cache",), {"help": "cell cache folder: every finished training is kept there at once and a rerun of "
                            "the same command trains only what is missing (default: OUT/cells with --out, none "
                            "without; share one folder between commands; a code change retrains)"}),
            (("--jobs",), {"type": int, "help": "cells trained at once: in worker processes spread over this "
                           "machine's GPUs (default 1; results as with 1), or with --executor slurm the most "
                           "cluster jobs running at once (default: as many as the cluster grants)"}),
            (("--executor",), {"choices": ("local", "slurm"), "default": "local", "help": "where the cells run: "
                               "local (here, --jobs at once), or slurm: one SLURM job per cell through submitit "
                               "(pip install learnlock[slurm]; a rerun submits only the missing cells; see README)"}),
            (("--slurm-partition",), {"dest": "partition", "help": "SLURM partition of the cells' jobs (default: "
                                      "the cluster's)"}),
            (("--slurm-gpus",), {"dest": "gpus", "type": int, "default": 1, "help": "GPUs per cell (default 1; 0: "
                                 "the cells train on CPUs, for a command run on a CPU)"}),
            (("--slurm-cpus",), {"dest": "cpus", "type": int, "help": "CPU cores per cell (default: the cluster's)"}),
            (("--slurm-time",), {"dest": "time_min", "type": int, "default": 240, "metavar": "MINUTES",
                                 "help": "time limit of each cell's job in minutes (default 240)"}),
            (("--slurm-mem",), {"dest": "mem_gb", "type": float, "metavar": "GB",
                                "help": "memory per cell in GB (default: the cluster's)"}),
            (("--slurm-param",), {"dest": "params", "action": "append", "metavar": "KEY=VALUE",
                                  "help": "any other submitit parameter, repeatable: slurm_account=abc, slurm_qos=high, "
                                  "slurm_constraint=a100, slurm_setup='[\"module load cuda\"]' (JSON values)"})),
        "method": parent(
            (("--method",), {"default": "uge", "help": "protection method (see `learnlock list`; default uge)"}),
            (("--preset",), {"help": "preset of the method (uge: paper, the default, unlearn, undistill, "
                             "paper-no-ud, contrast, learnlock)"}),
            (("--rho",), {"type": float, "help": "L-inf radius in [0,1] pixel units (e.g. 0.04 or 8/255=0.0314)"}),
            (("--seed",), {"type": int, "help": "protection seed"}),
            (("--set",), {"action": "append", "metavar": "NAME=VALUE", "help": "any method setting, repeatable"})),
    }


def build_parser(commands: dict[str, Callable]) -> Parser:
    """The `learnlock` parser; `commands`: each subcommand's function (its docstring, where it has
    one, is the subcommand's description)."""
    parser = Parser(prog="learnlock", description=__doc__)
    parser.add_argument("--version", action="version", version=f"learnlock {version()}")
    # examples in epilogs keep their line breaks
    sub = parser.add_subparsers(dest="command", required=True, parser_class=functools.partial(
        Parser, formatter_class=argparse.RawDescriptionHelpFormatter))
    shared = parents()
    test, recipe, cells, method = (shared[k] for k in ("test", "recipe", "cells", "method"))

    p = sub.add_parser("evaluate", help="train networks on a dataset and report clean test accuracy",
                       parents=[test, recipe, cells])
    p.add_argument("--train", required=True, help="training set spec, e.g. fashion-mnist, folder:PATH")
    p.add_argument("--nets", type=name_list, default=["cnn"], help="comma-separated model names")
    p.add_argument("--seeds", type=int_list, default=[0], help="comma-separated init/data seeds")
    p.add_argument("--per-class", type=int, help="train on a seeded subset of N images per class")
    p.add_argument("--out", help="folder for results.json (a rerun resumes from it)")
    p.set_defaults(func=commands["evaluate"])

    p = sub.add_parser("protect", help="publish a protected copy of a dataset", parents=[method])
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
    p.add_argument("--per-class", type=int, help="protect a seeded subset of N images per class")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=("train", "owner", "aux", "dev"),
                   help="the train split (default), or a fixed range of it: owner = items 0-999 per class, "
                        "aux 1000-1999, dev 2000-2199 (with --per-class: the range's first N)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing published dataset at OUT")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_recipe_args(p, "authorized")
    p.set_defaults(func=commands["protect"])

    p = sub.add_parser("train", help="train the authorized network on a published dataset", parents=[test])
    p.add_argument("--authorized", required=True, help="the key file (.safetensors) the protector gave you")
    p.add_argument("--data", required=True, help="published dataset folder")
    p.add_argument("--out", help="write the trained weights here (.safetensors)")
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=commands["train"])

    p = sub.add_parser("table1", help="authorized vs hacker accuracy on published datasets (UGE Table 1)",
                       parents=[test, recipe, cells])
    p.add_argument("--published", nargs="+", required=True, help="published dataset folder(s) of one source")
    p.add_argument("--authorized", required=True, help="the authorized key file (.safetensors)")
    p.add_argument("--hackers", default="cnn:1,lenet:1,resnet8:1", help="ARCH:SEED,... trained from scratch")
    p.add_argument("--distill", default="cnn:1", help="ARCH:SEED,... distilled from the authorized net (\"\" for none)")
    p.add_argument("--wrong-keys", type=int_list, default=[], metavar="SEED[,SEED...]",
                   help="wrong-key hackers: the authorized architecture (a keyed network: same scheme) from "
                        "these init seeds, trained like the authorized network")
    p.add_argument("--seeds", type=int_list, default=[0], metavar="SEED[,SEED...]",
                   help="evaluation seeds, a list, not a count (0,1: two seeds); seed s shifts every hacker and "
                        "wrong-key seed by 10 s")
    p.add_argument("--out", help="folder for table1.json, table1.md and PNG plots")
    p.set_defaults(func=commands["table1"])

    p = sub.add_parser("audit", help="score a published dataset against every attack",
                       description=commands["audit"].__doc__, parents=[test, recipe, cells])
    p.add_argument("published", help="published dataset folder")
    p.add_argument("--clean", help="the unprotected source, for the clean baseline (default: from the manifest)")
    p.add_argument("--clean-per-class", type=int)
    p.add_argument("--aux", help="attacker's auxiliary clean set spec (items of the published set are removed)")
    p.add_argument("--aux-split", default="train", choices=("train", "owner", "aux", "dev"),
                   help="the aux set's split: train (default; items of the published set removed) or a fixed "
                        "range (aux = items 1000-1999 per class, disjoint from owner)")
    p.add_argument("--aux-per-class", type=int, help="seeded subset of N aux images per class")
    p.add_argument("--authorized", help="the key file; enables the authorized row and distill")
    p.add_argument("--attacks", default="all", help="all, or comma-separated attack names")
    p.add_argument("--nets", type=name_list, default=["cnn"], help="hacker architectures")
    p.add_argument("--seeds", type=int_list, default=[0])
    p.add_argument("--set", action="append", metavar="ATTACK.NAME=VALUE", help="an attack setting, repeatable")
    p.add_argument("--out", required=True, help="folder for audit.json, audit.md, audit.png and the cell cache")
    p.set_defaults(func=commands["audit"])

    p = sub.add_parser("certify", help="certified (q, eta)-learnability of a published dataset (parametric smoothing)",
                       description=commands["certify"].__doc__, parents=[test, recipe])
    p.add_argument("published", help="folder written by `learnlock protect`")
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
    p.set_defaults(func=commands["certify"])

    p = sub.add_parser("federated", description=commands["federated"].__doc__,
                       parents=[test, recipe, cells, method],
                       help="UGE in federated learning: clients protect their shards against one global network (Table 9)")
    p.add_argument("--data", required=True, help="dataset spec (its train split is shared out)")
    p.add_argument("--per-class", type=int, help="use a seeded subset of N training images per class")
    p.add_argument("--clients", type=int, default=2, help="number of clients (default 2)")
    p.add_argument("--split", default="classes", help="classes | iid | dirichlet:ALPHA (default classes)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the iid / dirichlet split")
    p.add_argument("--global-arch", required=True, help="architecture name of the global network, or its key file")
    p.add_argument("--global-seed", type=int, help="init seed of the global network")
    p.add_argument("--global-secret", help="pass phrase hashed into the init seed (instead of --global-seed)")
    p.add_argument("--hackers", default="cnn:1", help="ARCH:SEED,... trained on the published union")
    p.add_argument("--distill", default="cnn:1", help="ARCH:SEED,... distilled from the trained global network (\"\" for none)")
    p.add_argument("--out", required=True, help="run folder: published shards, cell cache, reports (a rerun resumes)")
    p.set_defaults(func=commands["federated"], flag_aliases={"authorized": "--global-arch", "key_seed": "--global-seed",
                                                     "key_secret": "--global-secret"})

    p = sub.add_parser("report", help="one self-contained HTML page (+ JSON) for a published dataset and its runs",
                       description=commands["report"].__doc__)
    p.add_argument("published", help="published dataset folder")
    p.add_argument("runs", nargs="*", metavar="RUN", help="table1 / audit / certify / federated output folders, or "
                   "folders that hold them (found by the published manifest's fingerprint)")
    p.add_argument("--out", required=True, help="the HTML file to write (the JSON goes beside it, .json)")
    p.add_argument("--originals", metavar="DATA_SPEC", help="the clean originals (a dataset spec; its train split) "
                   "for PSNR, SSIM and the residual (default: the source the manifest names, when it is a local "
                   "folder or npz file)")
    p.set_defaults(func=commands["report"])

    p = sub.add_parser("list", help="list datasets, models and recipes")
    p.set_defaults(func=commands["list"])
    for p in sub.choices.values():
        p.set_defaults(command_parser=p)  # main names this command's flags in its messages
    return parser
