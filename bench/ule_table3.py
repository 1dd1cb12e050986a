"""Unlearnable-example baselines vs UGE on the CPU benchmark (UGE's Table 3, sized for 2 cores),
each protection's wall time in the same run, and certified learnability of EM vs PUE.

    .venv/bin/python bench/ule_table3.py run [--methods a,b] [--seeds 0,1]
    .venv/bin/python bench/ule_table3.py certify [--n 200]
    .venv/bin/python bench/ule_table3.py report

Data: CIFAR-10 from ../shared/datasets/cifar10-jpg, 100 train images per class (per-class seed 0,
the clean-baseline size of BENCHMARKS.md), 100 clean test images per class. Every protection runs
on the same 1,000 images, one after the other in one process, and its wall time is recorded.
Surrogates are `cnn` (resnet18 is 10x slower here); the other CPU sizings are in COST. L-inf
methods use rho 8/255 except UGE (its paper default 0.04); LSP and AR use their own L2 norms and
OPS one pixel. Evaluation: networks trained with the `cpu` recipe (15 epochs, crop + flip) on each
published set, tested on clean images (lower = stronger protection). For UGE the authorized net
(cnn, key seed 1234) is also reported. Cells are cached in runs/bench-ule/ (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from learnlock import RECIPES, NetSpec, load_dataset
from learnlock.files import atomic_write_json
from learnlock.recipe import get_recipe
from learnlock.scenarios import publish_once, train_authorized
from learnlock.scenarios.certify import CertifySettings, certify, plot_certificates
from learnlock.data.published import load_published
from learnlock.losses import WeightNoiseLoss
from learnlock.models import create_model
from learnlock.protections import ProtectionContext, create_protection, get_protection
from learnlock.provenance import provenance
from learnlock.report.plots import grouped_bars
from learnlock.training import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
CIFAR = f"folder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpg'}"
OUT = ROOT / "runs" / "bench-ule"
DOCS = ROOT / "docs" / "bench"
PER_CLASS, TEST_PER_CLASS = 100, 100
KEY_SEED = 1234
NETS = {"cnn": (0, 1), "resnet8": (0,)}  # evaluation nets and their init / data-order seeds

SURROGATE = {"surrogate": "cnn"}
# name: (protection, settings). CPU sizing: cnn surrogates, round caps, fewer PGD steps.
METHODS = {
    "random": ("random", {}),
    "random (class-wise)": ("random", {"classwise": True}),
    "em": ("em", {**SURROGATE, "max_rounds": 40, "lr": 0.05}),
    "em (class-wise)": ("em", {**SURROGATE, "classwise": True, "max_rounds": 20}),
    "tap": ("tap", {**SURROGATE, "recipe": "cpu", "steps": 50, "step_size": 1 / 255}),
    "rem": ("rem", {**SURROGATE, "noise_steps": 5, "adv_steps": 3, "max_rounds": 10}),
    "lsp": ("lsp", {}),
    "ar": ("ar", {}),
    "ops": ("ops", {}),
    "pue": ("pue", {**SURROGATE, "max_rounds": 20}),
    "uge (paper)": ("uge", {"preset": "paper", "encoder_resolution": 32}),
}
CERT = {"clean": None, "em (class-wise)": "em (class-wise)", "pue": "pue"}


def data():
    return (load_dataset(CIFAR, "train", per_class=PER_CLASS, seed=0),
            load_dataset(CIFAR, "test", per_class=TEST_PER_CLASS, seed=0))


def slug(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace("-", "_")


def protect(name: str, train, seed: int) -> tuple[Path, float]:
    """Publish `train` under method `name`; cached with its wall time."""
    method, settings = METHODS[name]
    s = dict(settings)
    preset = s.pop("preset", None)
    key = NetSpec.create("cnn", train.num_classes, train.in_channels, seed=KEY_SEED)  # read by methods with a key
    make = lambda: create_protection(method, ProtectionContext([key], RECIPES["cpu"]), preset=preset,  # noqa: E731
                                     seed=seed, **s)
    opened, seconds = publish_once(OUT / "published" / f"{slug(name)}_s{seed}", make, train,
                                   {"method": method, "settings": settings, "seed": seed},
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
    return opened.path, seconds


def train_eval(name: str, pseed: int, published: Path, test, net: str, seed: int, authorized: bool = False) -> float:
    """Train `net` (init seed `seed`, or the authorized key) on a published set; test on clean."""
    tag = "_authorized" if authorized else ""
    cell = OUT / "cells" / f"{slug(name)}_p{pseed}{tag}__{net}_{seed}.json"
    pub, _ = load_published(published)
    fp = pub.fingerprint()
    if cell.exists() and json.loads(cell.read_text()).get("data") == fp:
        return json.loads(cell.read_text())["accuracy"]
    t0 = time.perf_counter()
    if authorized:
        key = NetSpec.create("cnn", pub.num_classes, pub.in_channels, seed=KEY_SEED)
        model = train_authorized(pub, key, RECIPES["cpu"], desc=f"{name} {net}{tag}")
    else:
        model = fit(create_model(net, pub.num_classes, pub.in_channels, seed=seed), pub, get_recipe("cpu", seed=seed),
                    desc=f"{name} {net}{tag}")
    acc = evaluate(model, test)
    atomic_write_json(cell, {"method": name, "protection_seed": pseed, "authorized": authorized, "accuracy": acc,
                             "data": fp, "net": net, "seed": seed, "train_seconds": time.perf_counter() - t0})
    print(f"[train] {name} {net}{tag} seed {seed}: {100 * acc:.1f} %", file=sys.stderr, flush=True)
    return acc


def clean_published(train) -> Path:
    out = OUT / "published" / "clean"
    if not out.exists():
        from learnlock.data.published import write_published

        write_published(out, train, train.images, method="clean", rho=None, settings={}, seed=None,
                        protected=[])
    return out


def cmd_run(args) -> None:
    train, test = data()
    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    pubs = {("clean", 0): (clean_published(train), 0.0)}
    for seed in seeds:
        for name in names:
            pubs[(name, seed)] = protect(name, train, seed)
    for (name, seed), (path, _) in pubs.items():
        for net, net_seeds in NETS.items():
            for s in net_seeds:
                train_eval(name, seed, path, test, net, s)
        if name != "clean" and get_protection(METHODS[name][0]).needs_key:
            train_eval(name, seed, path, test, "cnn", 0, authorized=True)
    cmd_report(args)


def cmd_certify(args) -> None:
    train, test = data()
    s = CertifySettings(n=args.n, sigma=args.sigma)
    certs = {}
    for label, name in CERT.items():
        path = clean_published(train) if name is None else protect(name, train, 0)[0]
        pub, _ = load_published(path)
        out = OUT / "certify" / f"{slug(label)}_sigma{args.sigma}"
        weights = out / "surrogate.safetensors"
        if weights.exists():
            model = NetSpec.load(weights).build()
        else:
            model = create_model("cnn", pub.num_classes, pub.in_channels, seed=0)
            fit(model, pub, RECIPES["cpu"], loss=WeightNoiseLoss(model, args.sigma, 1, seed=0),
                desc=f"surrogate {label}")
            out.mkdir(parents=True, exist_ok=True)
            NetSpec.from_model("cnn", model, pub.num_classes, pub.in_channels).save(weights, overwrite=True)
        t0 = time.perf_counter()
        certs[label] = certify(model, test, s, out_dir=out, surrogate={"arch": "cnn", "train_sigma": args.sigma,
                                                                      "published": label})
        print(f"[certify] {label}: {time.perf_counter() - t0:.0f} s; surrogate {100 * certs[label].base_accuracy:.1f} %",
              file=sys.stderr, flush=True)
    plot_certificates(certs, DOCS / f"ule_certified_sigma{args.sigma}.png", chance=0.1)
    cmd_report(args)


def cmd_report(args) -> None:
    cells = [json.loads(f.read_text()) for f in sorted((OUT / "cells").glob("*.json"))]
    times: dict[str, list[float]] = {}
    for f in sorted((OUT / "published").glob("*.json")):
        times.setdefault(f.stem.rsplit("_s", 1)[0], []).append(json.loads(f.read_text())["seconds"])
    lines = ["| protection | cnn test acc % (mean ± std) | resnet8 test acc % | authorized cnn % | "
             "protect wall s | protection seeds x net seeds |", "|---|---|---|---|---|---|"]
    groups, bars = [], {net: [] for net in NETS}
    for name in ["clean"] + list(METHODS):
        mine = [c for c in cells if c["method"] == name]
        if not mine:
            continue
        per = {net: [100 * c["accuracy"] for c in mine if c["net"] == net and not c["authorized"]] for net in NETS}
        auth = [100 * c["accuracy"] for c in mine if c["authorized"]]
        fmt = {net: (f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else
                     (f"{v[0]:.1f}" if v else "-")) for net, v in per.items()}
        secs = times.get(slug(name), [0.0])
        pseeds = len({c["protection_seed"] for c in mine})
        lines.append(f"| {name} | {fmt['cnn']} | {fmt['resnet8']} | {f'{statistics.fmean(auth):.1f}' if auth else '-'} "
                     f"| {statistics.median(secs):.1f} | {pseeds} x {'/'.join(str(len(s)) for s in NETS.values())} |")
        groups.append(name)
        for net in NETS:
            bars[net].append(statistics.fmean(per[net]) if per[net] else 0.0)
    table = "\n".join(lines) + "\n"
    em, uge = times.get(slug("em")), times.get(slug("uge (paper)"))
    if em and uge:
        table += (f"\nUGE (paper) / EM (sample-wise) protection wall time: {statistics.median(uge) / statistics.median(em):.2f}x "
                  f"({statistics.median(uge):.0f} s vs {statistics.median(em):.0f} s, same run, medians over seeds)\n")
    for f in sorted((OUT / "certify").glob("*/certify.json")):
        c = json.loads(f.read_text())
        bounds = ", ".join(f"{r['eta']:g}: " + ("abstain" if r["abstain"] else f"{100 * r['bound']:.1f}")
                           for r in c["rows"])
        table += (f"\ncertified, {f.parent.name} (N {len(c['accuracies'])}): surrogate {100 * c['base_accuracy']:.1f} %, "
                  f"empirical 0.9-quantile {100 * c['empirical_q_quantile']:.1f} %; bound by eta: {bounds}\n")
    print(table)
    if groups:
        grouped_bars(groups, {f"{net} (test acc %)": v for net, v in bars.items()}, DOCS / "ule_table3.png",
                     title="CIFAR-10 1k: clean test accuracy after training on each protected set (lower = stronger)",
                     hline=10.0)
    published = {name: OUT / "published" / f"{slug(name)}_s0" for name in METHODS}
    published = {"clean": OUT / "published" / "clean", **{k: v for k, v in published.items() if v.exists()}}
    if len(published) > 1:
        examples(published, DOCS / "ule_examples.png")
    atomic_write_json(OUT / "report.json", {"table": table, "date": date.today().isoformat(),
                                            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                                            **provenance()})


def examples(published: dict[str, Path], path: Path, n: int = 6) -> None:
    """One row per protection: the same n images, and the change x10 around grey, so that
    the perturbation's structure shows."""
    from learnlock.report.plots import plt, save_figure

    sets = {name: load_published(p)[0] for name, p in published.items()}
    clean = sets["clean"].images[:n * 100:100].float() / 255
    fig, axes = plt.subplots(len(sets), 2 * n, figsize=(2 * n * 0.9, len(sets) * 0.95))
    for r, (name, ds) in enumerate(sets.items()):
        x = ds.images[:n * 100:100].float() / 255
        for c in range(n):
            axes[r, c].imshow(x[c].permute(1, 2, 0).numpy())
            axes[r, n + c].imshow(((x[c] - clean[c]) * 10 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy())
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("published images", loc="left", fontsize=8)
    axes[0, n].set_title("change x10 (grey = none)", loc="left", fontsize=8)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "certify", "report"])
    ap.add_argument("--methods", default="all")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sigma", type=float, default=0.25)
    args = ap.parse_args()
    {"run": cmd_run, "certify": cmd_certify, "report": cmd_report}[args.what](args)


if __name__ == "__main__":
    main()
