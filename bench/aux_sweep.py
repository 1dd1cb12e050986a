"""The aux sweep at the 10k tier (issue 20 section 2): what an attacker's clean aux images are
worth alone, and what an attack that uses them gains on top, at 0, 100 and 1,000 images per class.

The attack is weight-space recovery (`recover`, PUE Sec. 5): train on the published EM images,
then fine-tune on the clean aux images within an L2 ball (eta 1.0, 10 epochs). Its baseline is the
same net (fastnet, `fast`) trained on the aux images alone. An aux attack wins only where it beats
that baseline by more than 0.1 in ratio (the rule `learnlock audit` now applies). At aux 0 the
attacker has the published images only: the tier's "em none" cell, and the baseline is chance.

The EM pixels and the clean/em cells are the tier's (bench/tier10k.py), read from the shared cell
cache when the tier has run under the same code (the figures in BENCHMARKS.md were run from the
calibration's snapshot, commit 6251639, for that reason):

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/aux_sweep.py --cache runs/cells --out docs/bench/cifar10k

Aux = the `aux` split (per class items 1000-1999, never owner images), its first N per class.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tier10k  # noqa: E402  (the tier's cells, so the cached ones are reused)

from learnlock.attacks import AttackContext, create_attack  # noqa: E402
from learnlock.cells import CellCache, cell_inputs, code_version  # noqa: E402
from learnlock.data.splits import load_split  # noqa: E402
from learnlock.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from learnlock.provenance import provenance  # noqa: E402
from learnlock.training import evaluate  # noqa: E402

RECOVER = {"eta": 1.0, "epochs": 10}
MARGIN = 0.1


def recover_cell(cache: CellCache, published, aux, dev, test, seed: int, recipe, progress: bool) -> dict:
    """fastnet trained on the published images, then moved within eta on the aux images."""
    inputs = cell_inputs(data=published, aux=aux, dev=dev, test=test, attack="recover", settings=RECOVER,
                         net="fastnet", seed=seed, recipe=recipe)

    def compute():
        attack = create_attack("recover", **RECOVER)
        start = time.perf_counter()
        model = attack.train(published, "fastnet", seed, recipe, AttackContext(aux=aux, progress=progress), progress)
        return {"accuracy": evaluate(model, test), "dev": evaluate(model, dev),
                "train_s": round(time.perf_counter() - start, 1)}

    return cache.run("train", inputs, compute)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000", help="aux images per class (0 is the tier's em row)")
    p.add_argument("--seed", type=int, default=0)
    tier10k.tier_arguments(p, out_help="where aux_sweep.json and .md go")
    args = p.parse_args(argv)
    tier = tier10k.open_tier(args)
    cache, owner, dev, test, fast, log, progress = (tier.cache, tier.owner, tier.dev, tier.test, tier.fast, tier.log,
                                                     tier.progress)
    images = tier10k.protect(cache, "em", owner, fast, log)[0]
    published = owner.with_images(images, source=f"{owner.source} [em]")
    clean = tier10k.train_cell(cache, owner, owner.images, dev, test, "clean", "none", "fastnet", fast, args.seed,
                               progress)["accuracy"]
    em = tier10k.train_cell(cache, owner, images, dev, test, "em", "none", "fastnet", fast, args.seed,
                            progress)["accuracy"]
    rows = [{"aux_per_class": 0, "aux_only": tier10k.CHANCE, "attack": em, "attack_name": "retrain (no aux)"}]
    for n in [int(s) for s in args.sizes.split(",") if s]:
        aux = load_split(args.data, "aux", n)
        start = time.perf_counter()
        only = tier10k.train_cell(cache, aux, aux.images, dev, test, "aux", "none", "fastnet", fast, args.seed,
                                  progress)["accuracy"]
        log(f"aux-only {n}/class: {100 * only:.1f} % ({time.perf_counter() - start:.0f} s)")
        start = time.perf_counter()
        rec = recover_cell(cache, published, aux, dev, test, args.seed, fast, progress)["accuracy"]
        log(f"recover with aux {n}/class: {100 * rec:.1f} % ({time.perf_counter() - start:.0f} s)")
        rows.append({"aux_per_class": n, "aux_only": only, "attack": rec, "attack_name": "recover"})
    for r in rows:
        r["aux_only_ratio"] = tier10k.ratio(r["aux_only"], clean)
        r["attack_ratio"] = tier10k.ratio(r["attack"], clean)
        rated = r["attack_ratio"] is not None and r["aux_only_ratio"] is not None
        r["beats_aux_only"] = r["attack_ratio"] > r["aux_only_ratio"] + MARGIN if rated else None
    meta = {"code_version": code_version(), "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
            "owner": len(owner), "dev": len(dev), "test": len(test), "clean_accuracy": clean, "recover": RECOVER,
            "margin": MARGIN, "protection": "em (the tier's)", **provenance()}
    lines = [f"Aux sweep at the 10k tier: EM-protected owner set, fastnet + `fast`, seed {args.seed}, "
             f"{len(test)} test images; clean owner set {100 * clean:.1f} %; code {meta['code_version']}; {meta['date']}",
             "", "| aux / class | aux-only % (ratio) | attack | attack % (ratio) | beats aux-only + 0.1 |",
             "|---|---|---|---|---|"]
    def rate(x):
        return "n/a" if x is None else f"{x:.2f}"

    for r in rows:
        beats = {True: "yes", False: "no", None: "n/a (clean near chance)"}[r["beats_aux_only"]]
        lines.append(f"| {r['aux_per_class']} | {100 * r['aux_only']:.1f} ({rate(r['aux_only_ratio'])}) | "
                     f"{r['attack_name']} | {100 * r['attack']:.1f} ({rate(r['attack_ratio'])}) | {beats} |")
    out = Path(args.out)
    atomic_write_json(out / "aux_sweep.json", {**meta, "rows": rows})
    atomic_write_bytes(out / "aux_sweep.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
