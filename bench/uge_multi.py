"""UGE with several authorized networks (the paper's supplementary Tables 2, 7, 8 and Fig. 7) on
the CPU benchmark: authorized accuracy (mean over the authorized nets) and hacker accuracy
(Normal and Distill) against the number of authorized networks K, plus a mixed-architecture set.

    .venv/bin/python bench/uge_multi.py run --sets K=1,K=2,K=3,mixed --seeds 0
    .venv/bin/python bench/uge_multi.py report          # markdown table + docs/bench/uge_multi.png

Data, recipes and the UGE configuration are those of bench/uge_table1.py: CIFAR-10 1,000 train /
1,000 test images, the `paper` preset with the encoder at 32 px, rho 0.04, authorized nets trained
with the `cpu` recipe. Authorized sets: cnn inits 1234, 1235, 1236 (K = 1, 2, 3) and the mixed set
cnn 1234 + resnet8 1234. Hackers (own init, `cpu` recipe): cnn and resnet8 trained on the
published data (Normal), and a cnn distilled from the first authorized net (cnn 1234, the same
teacher in every set). Every (set, seed) cell is cached under runs/bench-uge-multi/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from learnlock import RECIPES, NetSpec
from learnlock.files import atomic_write_bytes, atomic_write_json
from learnlock.protections import ProtectionContext
from learnlock.protections.uge import UGE
from learnlock.provenance import provenance
from learnlock.report import learnability_ratio, markdown_table
from learnlock.report.plots import line_plot
from learnlock.scenarios import Hacker, authorized_vs_hackers, without_seeds

sys.path.insert(0, str(Path(__file__).parent))
from uge_table1 import BASE, ROOT, data  # noqa: E402  (same data and encoder setting as Table 1)

OUT = ROOT / "runs" / "bench-uge-multi"
PNG = ROOT / "docs" / "bench" / "uge_multi.png"
SETS = {
    "K=1": [("cnn", 1234)],
    "K=2": [("cnn", 1234), ("cnn", 1235)],
    "K=3": [("cnn", 1234), ("cnn", 1235), ("cnn", 1236)],
    "mixed": [("cnn", 1234), ("resnet8", 1234)],
}
LABELS = {"mixed": "mixed cnn + resnet8"}
HACKERS = [Hacker("retrain", "cnn", 1), Hacker("retrain", "resnet8", 1), Hacker("distill", "cnn", 1)]


def keys_of(members) -> list[NetSpec]:
    return [NetSpec.create(arch, 10, 3, seed=seed) for arch, seed in members]


def evaluate_cell(published, test, keys, seed) -> dict:
    hackers = [replace(h, seed=h.seed + 10 * seed) for h in HACKERS]
    res = authorized_vs_hackers(published, test, keys, RECIPES["cpu"], hackers, RECIPES["cpu"])
    res = without_seeds(res, hackers)
    return res


def run_clean(seed, train, test) -> dict:
    """Clean accuracy of every network any set authorizes, and of the hackers (the ratio baselines)."""
    done = OUT / "clean" / f"seed{seed}" / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    members = sorted({m for ms in SETS.values() for m in ms})
    res = evaluate_cell(train, test, keys_of(members), seed)
    res["members"] = [f"{a} {s}" for a, s in members]
    atomic_write_json(done, res)
    return res


def run_set(name, seed, train, test) -> dict:
    cell = OUT / name / f"seed{seed}"
    done = cell / "result.json"
    keys = keys_of(SETS[name])
    prot = UGE(ProtectionContext(keys, RECIPES["cpu"]), preset="paper", seed=seed, **BASE)
    settings = json.loads(json.dumps(prot.manifest_settings()))
    if done.exists():
        cached = json.loads(done.read_text())
        if cached["settings"] == settings and cached["keys"] == [k.fingerprint for k in keys]:
            return cached
        print(f"{name} seed {seed}: configuration changed since it was cached; recomputing", flush=True)
    cache = cell / "protected.safetensors"
    if cache.exists() and (cell / "protect.json").exists():
        images = load_file(str(cache))["images"]
        info = json.loads((cell / "protect.json").read_text())
    else:
        start = time.perf_counter()
        images = prot.apply(train, workdir=cell / "work")  # resumable per epoch
        info = {"protect_wall_s": round(time.perf_counter() - start, 1),
                "diagnostics": getattr(prot, "diagnostics", None), "log": prot.log}
        atomic_write_json(cell / "protect.json", info)
        atomic_write_bytes(cache, save({"images": images.contiguous()}))
    res = evaluate_cell(train.with_images(images, source=f"uge:{name}"), test, keys, seed)
    res.update(info, settings=settings, keys=[k.fingerprint for k in keys],
               members=[f"{a} {s}" for a, s in SETS[name]], max_abs_delta_255=float((images.float() - train.images.float()).abs().max()))
    atomic_write_json(done, res)
    return res


def report() -> None:
    rows, clean = {}, {}
    for name in SETS:
        cells = [json.loads(p.read_text()) for p in sorted((OUT / name).glob("seed*/result.json"))]
        if cells:
            rows[name] = cells
    for p in sorted((OUT / "clean").glob("seed*/result.json")):
        c = json.loads(p.read_text())
        clean[p.parent.name] = c
    if not rows or not clean:
        raise SystemExit("nothing to report yet: run `bench/uge_multi.py run` first")
    # Clean baselines: each authorized net's own clean accuracy, each hacker's clean accuracy.
    c_auth = {m: statistics.fmean(c["authorized_each"][c["members"].index(m)] for c in clean.values())
              for m in next(iter(clean.values()))["members"]}
    c_hack = {h: statistics.fmean(c["hackers"][h] for c in clean.values()) for h in next(iter(clean.values()))["hackers"]}
    cols = list(c_hack)
    body, series, xs, points = [], {"authorized (mean)": [], **{h: [] for h in cols}}, [], {}

    def mean_sd(vals):
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    for name, cells in rows.items():
        members = cells[0]["members"]
        auth_m, auth_sd = mean_sd([c["authorized"] for c in cells])
        auth_clean = statistics.fmean(c_auth[m] for m in members)
        each = [statistics.fmean(c["authorized_each"][i] for c in cells) for i in range(len(members))]
        line = [name, " + ".join(members), str(len(cells)),
                ", ".join(f"{100 * v:.1f}" for v in each),
                f"{100 * auth_m:.1f} ± {100 * auth_sd:.1f} ({learnability_ratio(auth_m, auth_clean, 10):.2f})"]
        values = {"authorized (mean)": 100 * auth_m}
        for h in cols:
            m, sd = mean_sd([c["hackers"][h] for c in cells])
            line.append(f"{100 * m:.1f} ± {100 * sd:.1f} ({learnability_ratio(m, c_hack[h], 10):.2f})")
            values[h] = 100 * m
        line.append(f"{statistics.fmean(c['protect_wall_s'] for c in cells):.0f}")
        body.append(line)
        if name.startswith("K="):
            xs.append(len(members))
            for k, v in values.items():
                series[k].append(v)
        else:
            points[LABELS.get(name, name)] = (len(members), values)
    clean_line = ["clean", " + ".join(c_auth), str(len(clean)), ", ".join(f"{100 * v:.1f}" for v in c_auth.values()),
                  f"{100 * statistics.fmean(c_auth.values()):.1f} (1.00)"]
    clean_line += [f"{100 * c_hack[h]:.1f} (1.00)" for h in cols] + ["-"]
    print(markdown_table(["set", "authorized nets (arch init)", "seeds", "authorized each %",
                          "authorized mean % (ratio)", *[f"{h} % (ratio)" for h in cols], "protect s"],
                         [clean_line] + body))
    line_plot(xs, series, PNG, xlabel="number of authorized networks K (cnn, different inits)", hline=10.0,
              title="UGE with K authorized networks: CIFAR-10 1k, test accuracy", points=points)
    print(f"\nplot: {PNG.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "report"])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    if args.what == "report":
        report()
        return
    train, test = data()
    names = [s for s in args.sets.split(",") if s]
    for n in names:
        if n not in SETS:
            raise SystemExit(f"unknown set {n!r}; choose from {', '.join(SETS)}")
    atomic_write_json(OUT / "meta.json", {"date": date.today().isoformat(), "command": " ".join(sys.argv),
                                          "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                                          "train_size": len(train), "test_size": len(test), **provenance()})
    for seed in [int(s) for s in args.seeds.split(",")]:
        c = run_clean(seed, train, test)
        print(f"clean seed {seed}: authorized each {[round(100 * v, 1) for v in c['authorized_each']]}, hackers "
              + ", ".join(f"{k} {100 * v:.1f}" for k, v in c["hackers"].items()), flush=True)
        for name in names:
            t = time.perf_counter()
            r = run_set(name, seed, train, test)
            print(f"{name} seed {seed}: authorized {[round(100 * v, 1) for v in r['authorized_each']]}, hackers "
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in r["hackers"].items())
                  + f" (protect {r['protect_wall_s']} s, cell {time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
