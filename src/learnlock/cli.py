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


def key_bytes(key) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return key.save(Path(tmp) / "key.safetensors").read_bytes()


def cmd_protect(args) -> None:
    import shutil
    from pathlib import Path

    from .data import load_dataset
    from .data.published import check_out_dir
    from .keys import authorized_keys, load_key
    from .protections import get_protection

    cls = get_protection(args.method)
    data = load_dataset(args.data, "train", per_class=args.per_class, seed=args.subset_seed)
    out = check_out_dir(args.out, args.overwrite, source=data)
    settings = parse_settings(args.set)
    if args.rho is not None:
        settings["rho"] = args.rho
    if args.seed is not None:
        settings["seed"] = args.seed
    kwargs = {}
    files = {}
    if cls.needs_key:
        if not (args.authorized or args.authorized_arch):
            raise LearnlockError(f"{args.method} needs --authorized KEYFILE or ARCH (with --key-seed or --key-secret), "
                                 "or --authorized-arch ARCH[,ARCH...] --authorized-seeds N[,N...]")
        keyed = authorized_keys(data.num_classes, data.in_channels, args.authorized, args.authorized_arch,
                                args.authorized_seeds, args.key_seed, args.key_secret)
        kwargs = dict(authorized=[k for k, _ in keyed], recipe=recipe_from_args(args), progress=not args.no_progress)
        if cls.presets:
            kwargs["preset"] = args.preset
    elif args.authorized or args.authorized_arch:
        raise LearnlockError(f"{args.method} has no authorized network; --authorized is for methods that take a key "
                             "(see `learnlock list`)")
    else:
        keyed = []
    prot = cls(**kwargs, **settings)  # validates the settings before any work
    prot.progress = not args.no_progress
    given = {k.fingerprint for k, derived in keyed if not derived}  # key files the user already holds
    issued = prot.issued_keys(data)
    key_files = {}
    for i, key in enumerate(issued):
        if key.fingerprint not in given:  # made here (from a seed, a secret or by the method): hand it over
            key_path = Path(args.key_out or f"{out}.key.safetensors")
            if len(issued) > 1:
                key_path = key_path.with_name(key_path.name.replace(".safetensors", f"{i}.safetensors"))
            # a key trained by the method (lock) has no fingerprint yet: any existing file is another key
            if key_path.exists() and (not key.fingerprint or load_key(key_path).fingerprint != key.fingerprint):
                raise LearnlockError(f"{key_path} exists and holds another key; choose another --key-out")
            key_files[key_path] = i
        if args.include_weights:
            if not key.fingerprint:
                raise LearnlockError(f"{args.method} makes its key while it protects, so it cannot be put inside "
                                     "the published folder; drop --include-weights and hand over the key file")
            files[f"authorized_{i}.safetensors"] = key
    workdir = out.parent / f".{out.name}.work"
    print(f"protecting {len(data)} images of {data.source} with {args.method} (rho {prot.settings.rho:.4f}); "
          f"resumable state in {workdir}", file=sys.stderr)
    files = {name: key_bytes(key) for name, key in files.items()}
    # How to reload the clean source (for the "Original" row of `learnlock table1`).
    source_load = {"spec": args.data, "split": "train", "per_class": args.per_class,
                   "seed": args.subset_seed}
    path = prot.protect(data, out, overwrite=args.overwrite, files=files or None, workdir=workdir,
                        extra={"source_load": source_load})
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"published {len(data)} images to {path}")
    issued = prot.issued_keys(data)  # now final, also for keys the method trained
    for key_path, i in key_files.items():
        key = issued[i]
        if not key_path.exists():
            key.save(key_path)
        print(f"authorized key: {key_path} (fingerprint {key.fingerprint[:16]}...); give it only to the "
              "authorized user", file=sys.stderr)
    diag = getattr(prot, "diagnostics", None)
    if diag:
        print("diagnostics: " + ", ".join(f"{k} {v:.3f}" for k, v in diag.items()))


def cmd_train(args) -> None:
    from .data import load_dataset
    from .data.published import load_published
    from .keys import check_key_matches, load_key
    from .models import NetSpec
    from .training import Recipe, evaluate, fit

    data, manifest = load_published(args.data)
    key = load_key(args.authorized)
    check_key_matches(key, manifest)
    recipe = Recipe(**manifest["authorized"]["recipe"])
    if args.device:
        from dataclasses import replace

        recipe = replace(recipe, device=args.device)
    print(f"training {key.arch} ({key.fingerprint[:12]}) on {len(data)} published images with the "
          f"manifest's recipe ({recipe.epochs} epochs, seed {recipe.seed})", file=sys.stderr)
    model = fit(key.build(), key.prepare(data), recipe, progress=not args.no_progress, desc="authorized")
    if args.out:
        NetSpec.from_model(key.arch, model, key.num_classes, key.in_channels, key.kwargs).save(args.out)
        print(f"trained weights written to {args.out}", file=sys.stderr)
    if args.test:
        test = load_dataset(args.test, "test", per_class=args.test_per_class)
        print(f"test accuracy: {100 * evaluate(model, test):.2f}% on {len(test)} images of {test.source}")


def hacker_list(text: str, attack: str):
    from .scenarios import Hacker

    out = []
    for item in name_list(text or ""):
        arch, _, seed = item.partition(":")
        out.append(Hacker(attack, arch, int(seed or 1)))
    return out


def cmd_table1(args) -> None:
    from pathlib import Path

    from .data import load_dataset
    from .data.published import load_published
    from .keys import check_key_matches, load_key
    from .provenance import atomic_write_json, provenance
    from .report.plots import grouped_bars, image_grid
    from .scenarios import authorized_vs_hackers, ratios, table1_markdown, without_seeds
    from .training import Recipe

    key = load_key(args.authorized)
    published = []
    for d in args.published:
        ds, manifest = load_published(d)
        check_key_matches(key, manifest)
        name = manifest["settings"].get("preset") or manifest["method"]
        published.append((f"{name} ({Path(d).name})", ds, manifest))
    first = published[0][2]
    src = (first.get("extra") or {}).get("source_load")
    if not src:
        raise LearnlockError(f"{args.published[0]}: manifest does not say how to reload its clean source; "
                             "it was not written by `learnlock protect`")
    clean = load_dataset(src["spec"], src["split"], per_class=src["per_class"], seed=src["seed"])
    for name, ds, _ in published:
        if ds.ids != clean.ids:
            raise LearnlockError(f"{name}: its items are not those of {src['spec']} (ids differ); "
                                 "compare datasets protected from the same source")
    test = load_dataset(args.test or src["spec"], "test", per_class=args.test_per_class, seed=0)
    recipe = Recipe(**first["authorized"]["recipe"])
    hacker_recipe = recipe_from_args(args)
    hackers = hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill")
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        hs = [type(h)(h.attack, h.arch, h.seed + 10 * seed) for h in hackers]
        for name, ds in [("Original", clean)] + [(n, d) for n, d, _ in published]:
            res = authorized_vs_hackers(ds, test, [key], recipe, hs, hacker_recipe, not args.no_progress,
                                        published=ds is not clean)
            res = without_seeds(res, hs)
            rows.setdefault(name, []).append(res)
            print(f"{name} seed {seed}: authorized {100 * res['authorized']:.1f}%", file=sys.stderr)
    table = table1_markdown(rows, clean.num_classes)
    print("\nTest accuracy % (mean ± std over seeds) and learnability ratio (acc - chance) / (clean acc - chance):")
    print(f"train {len(clean)} images of {src['spec']}, test {len(test)} clean images, authorized "
          f"{key.arch} {key.fingerprint[:12]}, hackers trained with recipe {hacker_recipe.name}\n")
    print(table)
    r = ratios(rows, clean.num_classes)
    for name, v in r.items():
        if name != "Original":
            verdict = ("separates" if v["authorized_ratio"] >= 0.9 and v["worst_hacker_ratio"] <= 0.5
                       else "does NOT separate (target: authorized >= 0.9, every hacker <= 0.5)")
            print(f"\n{name}: authorized ratio {v['authorized_ratio']:.2f}, worst hacker ratio "
                  f"{v['worst_hacker_ratio']:.2f} -> {verdict}")
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "table1.json", {"rows": rows, "ratios": r, "test_size": len(test),
                                               "train_size": len(clean), **provenance()})
        (out / "table1.md").write_text(table + "\n")
        cols = ["authorized"] + list(rows["Original"][0]["hackers"])
        series = {c: [100 * sum(x["authorized"] if c == "authorized" else x["hackers"][c] for x in v) / len(v)
                      for v in rows.values()] for c in cols}
        grouped_bars(list(rows), series, out / "authorized_vs_hackers.png", hline=100 / clean.num_classes,
                     title="authorized vs hackers: clean test accuracy")
        name, ds, _ = published[0]
        image_grid(clean.images, ds.images, clean.labels, clean.classes, out / "grid.png", title=name)
        print(f"\nwritten: {out}/table1.json, table1.md, authorized_vs_hackers.png, grid.png", file=sys.stderr)


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
    from pathlib import Path

    from .audit import audit
    from .data import load_dataset
    from .data.published import load_published
    from .keys import check_key_matches, load_key
    from .models import list_models
    from .training import Recipe

    for net in args.nets:
        if net not in list_models():
            raise LearnlockError(f"unknown network {net!r}; choose from: {', '.join(list_models())}")
    published, manifest = load_published(args.published)
    src = (manifest.get("extra") or {}).get("source_load")
    clean = None
    if args.clean:
        clean = load_dataset(args.clean, "train", per_class=args.clean_per_class, seed=args.subset_seed)
    elif src:
        clean = load_dataset(src["spec"], src["split"], per_class=src["per_class"], seed=src["seed"])
    if clean is not None and clean.ids != published.ids:
        raise LearnlockError(f"clean baseline {clean.source} does not hold the published items (ids differ); "
                             "give --clean the dataset the published one was made from")
    if clean is None:
        print("note: no clean baseline (the manifest does not say how to reload its source; pass --clean SPEC); "
              "learnability ratios will be n/a", file=sys.stderr)
    test_spec = args.test or (src["spec"] if src else None)
    if not test_spec:
        raise LearnlockError("give the clean test set with --test SPEC")
    test = load_dataset(test_spec, "test", per_class=args.test_per_class, seed=args.subset_seed)
    aux = None
    if args.aux:
        aux = load_dataset(args.aux, args.aux_split)
        if src and args.aux == src["spec"] and args.aux_split == src["split"]:
            taken = set(published.ids)  # same source: keep the attacker's split disjoint
            aux = aux.subset([i for i, item in enumerate(aux.ids) if item not in taken])
        if args.aux_per_class:
            aux = aux.per_class(args.aux_per_class, seed=args.subset_seed)
    key, key_recipe = None, None
    shipped = Path(args.published) / "authorized_0.safetensors"  # written by protect --include-weights
    key_path = args.authorized or (shipped if shipped.exists() else None)
    if key_path:
        key = load_key(key_path)
        check_key_matches(key, manifest)
        key_recipe = Recipe(**manifest["authorized"]["recipe"])
        if args.device:
            key_recipe = replace(key_recipe, device=args.device)
    recipe = recipe_from_args(args)
    print(f"audit of {args.published}: {len(published)} images, test {len(test)}, aux "
          f"{len(aux) if aux is not None else 'none'}, nets {','.join(args.nets)}, seeds {args.seeds}, "
          f"recipe {recipe.name}", file=sys.stderr)
    result = audit(published, test, out_dir=args.out, attacks=args.attacks, nets=args.nets, seeds=args.seeds,
                   recipe=recipe, clean=clean, aux=aux, key=key, key_recipe=key_recipe,
                   settings=parse_attack_settings(args.set), scheme=(manifest.get("extra") or {}).get("key"),
                   progress=not args.no_progress,
                   log=lambda m: print(m, file=sys.stderr))
    print("\nClean test accuracy % (mean ± std over seeds) and learnability ratio "
          "(acc - chance) / (clean acc - chance); lower = the protection holds:\n")
    print(result["table"])
    if result["skipped"]:
        print(f"\nskipped: {'; '.join(result['skipped'])}")
    print(f"\nwritten: {args.out}/audit.json, audit.md, audit.png", file=sys.stderr)


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_certify(args) -> None:
    import json
    from pathlib import Path

    from .certify import DEFAULT_ETAS, CertifySettings, certify
    from .data import load_dataset
    from .data.published import load_published
    from .models import NetSpec, create_model, list_models
    from .provenance import atomic_write_json
    from .losses import WeightNoiseLoss
    from .training import cross_entropy, fit

    settings = CertifySettings(q=args.q, sigma=args.sigma, n=args.n, alpha=args.alpha,
                               etas=tuple(args.etas) if args.etas else DEFAULT_ETAS, seed=args.seed)
    published, manifest = load_published(args.published)
    src = (manifest.get("extra") or {}).get("source_load")
    test_spec = args.test or (src["spec"] if src else None)
    if not test_spec:
        raise LearnlockError("give the clean test set with --test SPEC")
    test = load_dataset(test_spec, "test", per_class=args.test_per_class, seed=args.subset_seed)
    if test.classes != published.classes:
        raise LearnlockError(f"test set {test.source} has classes {list(test.classes)[:5]}..., the published "
                             f"data {list(published.classes)[:5]}...; give the matching --test")
    out = Path(args.out)
    recipe = recipe_from_args(args)
    train_sigma = settings.sigma if args.train_sigma is None else args.train_sigma
    if args.weights:
        spec = NetSpec.load(args.weights)
        if (spec.num_classes, spec.in_channels) != (published.num_classes, published.in_channels):
            raise LearnlockError(
                f"{args.weights} is a {spec.arch} for {spec.num_classes} classes and {spec.in_channels} "
                f"channels; the published data have {published.num_classes} and {published.in_channels}")
        surrogate = {"weights": str(args.weights), "fingerprint": spec.fingerprint}
    else:
        if args.arch not in list_models():
            raise LearnlockError(f"unknown network {args.arch!r}; choose from: {', '.join(list_models())}")
        surrogate = {"arch": args.arch, "seed": args.seed, "recipe": recipe.to_dict(),
                     "train_sigma": train_sigma, "train_draws": args.train_draws,
                     "published": published.fingerprint()}
        weights, meta = out / "surrogate.safetensors", out / "surrogate.json"
        if weights.exists() and meta.exists() and json.loads(meta.read_text()) == surrogate:
            spec = NetSpec.load(weights)
            print(f"reusing the surrogate in {weights}", file=sys.stderr)
        else:
            model = create_model(args.arch, published.num_classes, published.in_channels, seed=args.seed)
            loss = (WeightNoiseLoss(model, train_sigma, args.train_draws, seed=args.seed)
                    if train_sigma > 0 else cross_entropy)
            print(f"training a {args.arch} surrogate on {len(published)} published images "
                  f"(weight noise sigma {train_sigma}, {recipe.epochs} epochs)", file=sys.stderr)
            fit(model, published, recipe, loss=loss, progress=not args.no_progress, desc="surrogate")
            spec = NetSpec.from_model(args.arch, model, published.num_classes, published.in_channels)
            out.mkdir(parents=True, exist_ok=True)
            spec.save(weights, overwrite=True)
            atomic_write_json(meta, surrogate)
    surrogate["method"] = manifest.get("method")
    cert = certify(spec.build(), test, settings, out_dir=out, surrogate=surrogate,
                   progress=not args.no_progress, device=recipe.resolved_device())
    print(cert.markdown())
    print(f"written: {out}/certify.json, certify.md, certify.png", file=sys.stderr)


def cmd_list(args) -> None:
    from .data import list_datasets
    from .models import list_models
    from .training import RECIPES

    print("datasets:", ", ".join(list_datasets()))
    print("models:  ", ", ".join(list_models()))
    import dataclasses

    from .protections import get_protection, list_protections
    from .protections.uge import PRESETS

    print(f"protections (--method NAME, --set SETTING=VALUE; uge presets: {', '.join(PRESETS)}):")
    for name in list_protections():
        cls = get_protection(name)
        fields = [f"{f.name}={f.default:.4g}" if isinstance(f.default, float) else f"{f.name}={f.default!r}"
                  for f in dataclasses.fields(cls.Settings)
                  if f.default is not dataclasses.MISSING]
        print(f"  {name} [{cls.norm}]: {', '.join(fields)}")
    from .attacks import list_attacks

    print("attacks:", ", ".join(list_attacks()))
    print("recipes: ")
    for name, r in RECIPES.items():
        print(f"  {name}: {r.epochs} epochs, {r.optimizer} lr {r.lr}, batch {r.batch_size}, "
              f"{r.schedule}, {r.augment}")


def cmd_federated(args) -> None:
    from pathlib import Path

    from .data import load_dataset
    from .data.published import check_out_dir
    from .federated import federate, split_shards, table9_markdown
    from .keys import resolve_key

    recipe = recipe_from_args(args)
    train = load_dataset(args.data, "train", per_class=args.per_class, seed=args.subset_seed)
    test = load_dataset(args.test or args.data, "test", per_class=args.test_per_class, seed=args.subset_seed)
    key = resolve_key(args.global_arch, train.num_classes, train.in_channels, args.global_seed, args.global_secret)
    shards = split_shards(train.labels, train.num_classes, args.clients, args.split, args.split_seed)
    out = Path(args.out)
    if not (out / "split.json").exists():  # a fresh run (a folder with split.json resumes)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LearnlockError(f"{out} exists and is not a federated run folder; choose a new --out")
        check_out_dir(out, overwrite=True, source=train)  # writable, and not inside the source data
    settings = parse_settings(args.set)
    if args.rho is not None:
        settings["rho"] = args.rho
    print(f"{args.clients} clients ({args.split}): " + ", ".join(f"client {k + 1} {len(s)} images"
                                                              for k, s in enumerate(shards))
          + f"; global {key.arch} {key.fingerprint[:12]}; test {len(test)} clean images", file=sys.stderr)
    hackers = hacker_list(args.hackers, "retrain") + hacker_list(args.distill, "distill")
    result = federate(train, test, key, shards, out, recipe, method=args.method, preset=args.preset,
                      settings=settings, hackers=hackers, split=args.split, progress=not args.no_progress)
    if not Path(args.global_arch).exists():
        key_path = out / "global.key.safetensors"
        if not key_path.exists():
            key.save(key_path)
        print(f"global key: {key_path} (the server keeps it)", file=sys.stderr)
    print(f"\nTest accuracy % of the {key.arch} global network and of the hackers "
          f"({result['method']}, {len(train)} images of {train.source}):\n")
    print(table9_markdown(result))
    if result["client_probe_acc"] is not None:
        print(f"\nclient probe: a linear probe tells the client from the perturbation alone with accuracy "
              f"{result['client_probe_acc']:.2f} (majority share {result['client_probe_chance']:.2f}); high "
              "means each client's noise is a signature a network can use as a shortcut")
    print(f"\nwritten: {out}/federated.json, federated.md, federated.png, client_*/ (published shards)",
          file=sys.stderr)


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
    p.add_argument("--include-weights", action="store_true", help="also put the key's weights in OUT")
    p.add_argument("--preset", default="paper",
                   help="uge preset: paper (default), unlearn, undistill, paper-no-ud, contrast, learnlock")
    p.add_argument("--rho", type=float, help="L-inf radius in [0,1] pixel units (e.g. 0.04 or 8/255=0.0314)")
    p.add_argument("--seed", type=int, help="protection seed")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any method setting, repeatable")
    p.add_argument("--per-class", type=int, help="protect a seeded subset of N images per class")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing published dataset at OUT")
    p.add_argument("--no-progress", action="store_true")
    add_recipe_args(p)
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("train", help="train the authorized network on a published dataset")
    p.add_argument("--authorized", required=True, help="the key file (.safetensors) the protector gave you")
    p.add_argument("--data", required=True, help="published dataset folder")
    p.add_argument("--test", help="clean test set spec to report accuracy on")
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--out", help="write the trained weights here (.safetensors)")
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")
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
    p.add_argument("--no-progress", action="store_true")
    add_recipe_args(p)
    p.set_defaults(func=cmd_table1)

    p = sub.add_parser(
        "audit", help="score a published dataset against every attack",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train hacker networks on a published dataset under each attack (retrain, distill, "
                    "augmentations, ISS, UEraser, adversarial training, diffusion purification, weight-space "
                    "recovery) and report clean test accuracy beside the clean baseline. Finished cells are "
                    "cached under --out; rerun the same command to resume.",
        epilog="example:\n"
               "  learnlock audit runs/demo/published --test fashion-mnist --test-per-class 100 \\\n"
               "      --aux fashion-mnist --aux-per-class 20 --authorized runs/demo/key.safetensors \\\n"
               "      --attacks retrain,distill,iss-jpeg,adversarial-training --nets cnn,lenet --seeds 0,1 \\\n"
               "      --set iss-jpeg.quality=10 --out runs/demo/audit\n"
               "attacks that need --aux: purify, purify-diffpure, recover, recover-random; "
               "distill needs the key (--authorized)")
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
    p.add_argument("--no-progress", action="store_true")
    add_recipe_args(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "certify", help="certified (q, eta)-learnability of a published dataset (parametric smoothing)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a surrogate on the published data (or load one), sample N weight vectors "
                    "theta + sigma*N(0,I), record their clean test accuracies and bound the q-quantile "
                    "accuracy of any smoothed classifier within L2 distance eta (Wang et al. 2024, PUE).",
        epilog="example:\n  learnlock certify runs/pub --test cifar10 --arch cnn --n 1000 --out runs/cert\n"
               "  (lower certified learnability = the protection holds for every net near the surrogate)")
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
    p.add_argument("--no-progress", action="store_true")
    add_recipe_args(p)
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser(
        "federated", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="UGE in federated learning: clients protect their shards against one global network (Table 9)",
        description="Split --data among clients; each client protects only its own shard against the global "
                    "network; the server trains the global network on the union of the published shards; "
                    "hackers train on the union (Normal) or distil the global network (Distill).",
        epilog="example:\n  learnlock federated --data cifar10 --per-class 100 --test-per-class 100 \\\n"
               "      --clients 2 --split classes --global-arch cnn --global-seed 1234 --out runs/fed")
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
    p.add_argument("--preset", default="paper", help="uge preset")
    p.add_argument("--rho", type=float, help="L-inf radius in [0,1] pixel units")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a protection setting, repeatable")
    p.add_argument("--hackers", default="cnn:1", help="ARCH:SEED,... trained on the published union")
    p.add_argument("--distill", default="cnn:1", help="ARCH:SEED,... distilled from the trained global network")
    p.add_argument("--out", required=True, help="run folder: published shards, cell cache, reports (a rerun resumes)")
    p.add_argument("--no-progress", action="store_true")
    add_recipe_args(p)
    p.set_defaults(func=cmd_federated)

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
