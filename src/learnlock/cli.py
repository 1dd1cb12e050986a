"""Command line: thin wrappers over the library. Bad input ends in one `error:` line, exit 2."""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from pathlib import Path

from .cli_args import Parser, build_parser as build_parser_of, name_list
from .errors import LearnlockError


def say(message: str) -> None:  # progress and notes go to stderr; results to stdout
    print(message, file=sys.stderr)


def recipe_from_args(args):
    from .recipe import get_recipe

    for old, new in (("old_epochs", "epochs"), ("old_recipe", "recipe")):
        if getattr(args, old, None) is not None:   # deprecated in 0.1.0, removed in 0.2.0 (CHANGELOG.md)
            raise LearnlockError(f"protect --{new} was removed in learnlock 0.2.0 (it read like the method's own "
                                 f"--set {new}): write --authorized-{new} for the recipe the authorized network "
                                 f"will train with" + (", or --set epochs=N for the method's own epochs"
                                                       if new == "epochs" else ""))
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
                 if v is not None}
    return get_recipe(args.recipe, **overrides)


def cells_from_args(args) -> dict:
    """`jobs` and `executor` of a command with cells: --jobs N local workers (default 1), or
    --executor slurm with the --slurm-* settings (--jobs then caps the jobs running at once)."""
    import json

    from .jobs import check_executor
    from .slurm import Slurm

    if args.executor == "local":
        return {"jobs": 1 if args.jobs is None else args.jobs, "executor": "local"}
    if args.jobs is not None and args.jobs < 1:
        raise LearnlockError(f"`jobs` (cluster jobs running at once) must be a whole number >= 1, got {args.jobs}")
    params = {}
    for pair in args.params or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise LearnlockError(f"--slurm-param expects KEY=VALUE (e.g. slurm_account=abc), got {pair!r}")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    settings = Slurm(partition=args.partition, gpus=args.gpus, cpus=args.cpus, time_min=args.time_min,
                     mem_gb=args.mem_gb, max_running=args.jobs, params=params)
    return {"jobs": 1, "executor": check_executor(settings)}


def cmd_evaluate(args) -> None:
    from .scenarios.evaluation import evaluate_specs, results_table

    rows = evaluate_specs(args.train, args.test, args.nets, args.seeds, recipe_from_args(args),
                          per_class=args.per_class, test_per_class=args.test_per_class, subset_seed=args.subset_seed,
                          log=say, out_dir=args.out, progress=not args.no_progress, **cells_from_args(args),
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


def method_settings(args) -> dict:
    """A protection's settings: every --set NAME=VALUE, then --rho and --seed where given."""
    return {**parse_settings(args.set), **{k: v for k, v in (("rho", args.rho), ("seed", args.seed)) if v is not None}}


def cmd_protect(args) -> None:
    from .protections.publish import publish

    result = publish(args.method, args.data, args.out, settings=method_settings(args), preset=args.preset,
                     per_class=args.per_class, subset_seed=args.subset_seed, split=args.split, authorized=args.authorized,
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
                             subset_seed=args.subset_seed, out=args.out, progress=not args.no_progress, log=say)
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
    return args.cache or (Path(args.out) / "cells" if getattr(args, "out", None) else None)


def cmd_table1(args) -> None:
    from .scenarios import Hacker, table1
    from .scenarios.table1 import WRONG_KEY

    result = table1(args.published, args.authorized, test=args.test, test_per_class=args.test_per_class,
                    subset_seed=args.subset_seed,
                    hackers=hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill")
                    + [Hacker(WRONG_KEY, "key", seed) for seed in args.wrong_keys],
                    seeds=args.seeds, hacker_recipe=recipe_from_args(args), out=args.out,
                    progress=not args.no_progress, log=say, **cells_from_args(args), cache=cache_from_args(args))
    print("\nTest accuracy % (mean ± std over seeds) and learnability ratio (acc - chance) / (clean acc - chance):")
    a, h = result.recipe, result.hacker_recipe
    print(f"train {result.train_size} images of {result.source}, test {result.test_size} clean images, authorized "
          f"{result.key} trained with the manifest's recipe {a.name} ({a.epochs} epochs), hackers with recipe "
          f"{h.name} ({h.epochs} epochs)\n")
    print(result.markdown())
    for name, verdict in result.verdict().items():
        print(f"\n{name}: {verdict}")
    cost = result.key_cost()
    if cost:
        print(f"key cost on clean data: {cost['points']:.1f} points (authorized {100 * cost['authorized_accuracy']:.1f} % "
              f"against the plain network, {cost['plain']}, {100 * cost['plain_accuracy']:.1f} %)")
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
                          progress=not args.no_progress, log=say, **cells_from_args(args), cache=cache_from_args(args))
    print("\nClean test accuracy % (mean ± std over seeds) and learnability ratio "
          "(acc - chance) / (clean acc - chance); lower = the protection holds:\n")
    print(result.markdown())
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
    from .scenarios.federated import run_federated

    result = run_federated(args.data, args.out, global_arch=args.global_arch, global_seed=args.global_seed,
                           global_secret=args.global_secret, test=args.test, per_class=args.per_class,
                           test_per_class=args.test_per_class, subset_seed=args.subset_seed, clients=args.clients,
                           split=args.split, split_seed=args.split_seed, recipe=recipe_from_args(args),
                           method=args.method, preset=args.preset, settings=method_settings(args),
                           hackers=hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill"),
                           progress=not args.no_progress, log=say, **cells_from_args(args), cache=args.cache)
    if result.key_path:
        say(f"global key: {result.key_path} (the server keeps it)")
    print(f"\nTest accuracy % of the {result.key.arch} global network and of the hackers "
          f"({result['method']}, {result['train_size']} images of {result.source}):\n")
    print(result.markdown())
    if result["client_probe_acc"] is not None:
        print(f"\nclient probe: a linear probe tells the client from the perturbation alone with accuracy "
              f"{result['client_probe_acc']:.2f} (majority share {result['client_probe_chance']:.2f}); high "
              "means each client's noise is a signature a network can use as a shortcut")
    say(f"\nwritten: {args.out}/federated.json, federated.md, federated.png, client_*/ (published shards)")
    for client in result["published"]:
        print_report_line(Path(args.out) / client["path"], args.out)


def build_parser() -> Parser:
    return build_parser_of({"evaluate": cmd_evaluate, "protect": cmd_protect, "train": cmd_train, "table1": cmd_table1,
                            "audit": cmd_audit, "certify": cmd_certify, "federated": cmd_federated,
                            "report": cmd_report, "list": cmd_list})


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
