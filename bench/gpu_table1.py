"""UGE's Table 1 on CIFAR-10 at full scale, in one command (meant for a GPU machine).

    .venv/bin/python bench/gpu_table1.py --data cifar10-jpg.tar.xz --jobs 4            # full: 50k images
    .venv/bin/python bench/gpu_table1.py --per-class 1000 --jobs 4                     # 10k images
    .venv/bin/python bench/gpu_table1.py --per-class 2 --epochs 1 --quick --device cpu # check it runs

Stages, each timed as it goes (a rerun with the same arguments and --out skips finished stages;
the audits resume cell by cell):
  1. data      the cifar10-jpg folder, or its .tar.xz unpacked once into --cache
  2. protect   `learnlock protect --method uge --preset paper`, authorized key ResNet-18 (init seed
               --key-seed); the authorized user's recipe ue-gpu (60 epochs, or --epochs)
  3. table1    `learnlock table1`: the authorized net (manifest recipe) and the hackers ResNet-18 (other
               init), MobileNetV2, ShuffleNetV2, cnn (Normal) and a ResNet-18 distilled from the trained
               authorized net (Distill), recipe ue-gpu, on the clean source (Original) and on UGE
  4. iss       the hackers under ISS (Liu et al. 2023): grayscale and JPEG quality 10, each trained on
               the UGE data and on the clean data (the clean reference of that row), via the library's
               `audit` (no clean baseline: table1's Original row is that)
  5. report    OUT/gpu_table1.json, gpu_table1.md, gpu_table1.png: accuracy % and learnability ratio
               (acc - chance) / (clean reference acc - chance) per row and column

--quick makes UGE tiny (1 generator epoch, encoder at 32 px, no diagnostics) and tests on 10 images
per class unless --test-per-class is given: for checking the script, not for numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gpu_common import ROOT, cifar_folder, default_data, learnlock

HACKERS = ["resnet18:1", "mobilenetv2:1", "shufflenetv2:1", "cnn:1"]
DISTILL = "resnet18:1"
ISS = {"iss-grayscale": "grayscale", "iss-jpeg": "JPEG-10"}


def stage(name: str, times: dict, start: float, out: Path, done_before: bool = False) -> None:
    """Record (OUT/stage_seconds.json) and print a stage's seconds; a stage skipped as done keeps
    the time it took then."""
    if done_before and name in times:
        print(f"== {name}: done before ({times[name]:.1f} s then)", flush=True)
        return
    times[name] = round(time.perf_counter() - start, 1)
    print(f"== {name}: {times[name]:.1f} s", flush=True)
    (out / "stage_seconds.json").write_text(json.dumps(times) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data(), help="cifar10-jpg folder or cifar10-jpg.tar.xz")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache", help="where a .tar.xz is unpacked once")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-table1")
    p.add_argument("--per-class", type=int, help="training images per class (default: all 5,000)")
    p.add_argument("--test-per-class", type=int, help="test images per class (default: all 1,000)")
    p.add_argument("--epochs", type=int, help="epochs of every network (default: the ue-gpu recipe's 60)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (table1 and ISS cells), over the GPUs")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--key-seed", type=int, default=1234, help="init seed of the authorized ResNet-18")
    p.add_argument("--quick", action="store_true", help="tiny UGE settings and test set: a check, not a result")
    args = p.parse_args(argv)
    if args.quick and args.test_per_class is None:
        args.test_per_class = 10
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    record = {k: str(v) for k, v in vars(args).items() if k not in ("jobs", "cache", "data", "out", "device")}
    args_file = out / "args.json"
    if args_file.exists() and json.loads(args_file.read_text()) != record:
        sys.exit(f"error: {out} holds a run with other arguments ({args_file}); choose another --out")
    args_file.write_text(json.dumps(record, indent=2) + "\n")
    times_file = out / "stage_seconds.json"  # kept across reruns: a skipped stage keeps its time
    times: dict[str, float] = json.loads(times_file.read_text()) if times_file.exists() else {}
    total = time.perf_counter()
    log = out / "commands.log"

    start = time.perf_counter()
    folder = cifar_folder(args.data, args.cache)
    spec = f"folder:{folder}"
    stage("data", times, start, out)

    subset = ["--per-class", str(args.per_class)] if args.per_class else []
    test = ["--test", spec] + (["--test-per-class", str(args.test_per_class)] if args.test_per_class else [])
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    common = ["--device", args.device, "--no-progress"]
    published, key = out / "published", out / "uge.key.safetensors"
    start, done = time.perf_counter(), (published / "manifest.json").exists()
    if not done:
        quick = ["--set", "epochs=1", "--set", "encoder_resolution=32", "--set", "diagnostics=false"] if args.quick else []
        learnlock("protect", "--method", "uge", "--preset", "paper", "--data", spec, *subset, "--authorized", "resnet18",
                  "--key-seed", args.key_seed, "--key-out", key, "--authorized-recipe", "ue-gpu",
                  *(["--authorized-epochs", str(args.epochs)] if args.epochs else []), *quick, *common,
                  "--out", published, "--overwrite", log=log)
    stage("protect", times, start, out, done)

    start, done = time.perf_counter(), (out / "table1" / "table1.json").exists()
    if not done:
        learnlock("table1", "--published", published, "--authorized", key, *test, "--hackers", ",".join(HACKERS),
                  "--distill", DISTILL, "--recipe", "ue-gpu", *epochs, "--jobs", args.jobs, *common,
                  "--out", out / "table1", log=log)
    stage("table1", times, start, out, done)

    start = time.perf_counter()
    iss = iss_rows(args, spec, published)
    stage("iss", times, start, out)

    start = time.perf_counter()
    report(args, out, json.loads((out / "table1" / "table1.json").read_text()), iss, times)
    stage("report", times, start, out)
    print(f"total {time.perf_counter() - total:.1f} s; written {out}/gpu_table1.json, gpu_table1.md, gpu_table1.png")
    return 0


def iss_rows(args, spec: str, published_dir: Path) -> dict:
    """{"clean"|"uge": {attack: {net: accuracy}}}: the hackers trained under each ISS countermeasure."""
    from learnlock.device import set_device
    from learnlock.scenarios import audit, open_published
    from learnlock.training import get_recipe

    set_device(args.device)
    recipe = get_recipe("ue-gpu", **({"epochs": args.epochs} if args.epochs else {}))
    # the clean source protect was given and the test set table1 tests on, as the manifest records them
    opened = open_published(published_dir, test=spec, test_per_class=args.test_per_class, clean=True)
    published, clean, test = opened.data, opened.clean, opened.test
    nets = [h.split(":")[0] for h in HACKERS]
    seeds = sorted({int(h.split(":")[1]) for h in HACKERS})
    out = {}
    for name, data in (("clean", clean), ("uge", published)):
        print(f"-- ISS on the {name} data: {', '.join(ISS)} x {', '.join(nets)}", flush=True)
        res = audit(data, test, out_dir=args.out / f"iss-{name}", attacks=list(ISS), nets=nets, seeds=seeds,
                    recipe=recipe, settings={"iss-jpeg": {"quality": 10}}, progress=False, jobs=args.jobs,
                    log=lambda m: print(f"   {m}", flush=True))
        out[name] = {a: {net: res["summary"][a][net]["mean"] for net in nets} for a in ISS}
    return out


def report(args, out: Path, t1: dict, iss: dict, times: dict) -> None:
    from learnlock.files import atomic_write_json
    from learnlock.provenance import provenance
    from learnlock.report import learnability_ratio, markdown_table
    from learnlock.report.plots import grouped_bars
    from learnlock.scenarios.table1 import AUTHORIZED_MIN, HACKER_MAX

    k = 10
    (original,), uge_name = t1["rows"]["Original"], next(n for n in t1["rows"] if n != "Original")
    (uge,) = t1["rows"][uge_name]
    cols = ["Authorized"] + list(original["hackers"])

    def accs(res: dict) -> dict:
        return {"Authorized": res["authorized"], **res["hackers"]}

    normal = {h: f"{h.split(':')[0]} Normal" for h in HACKERS}  # table1's column of that hacker
    rows = {"Clean": (accs(original), accs(original)), "UGE": (accs(uge), accs(original))}
    for attack, label in ISS.items():
        ref = {normal[h]: iss["clean"][attack][h.split(":")[0]] for h in HACKERS}
        rows[f"Clean + {label}"] = (ref, ref)
        rows[f"UGE + {label}"] = ({normal[h]: iss["uge"][attack][h.split(":")[0]] for h in HACKERS}, ref)
    table = {name: {c: {"accuracy": a[c], "ratio": learnability_ratio(a[c], ref[c], k)} for c in cols if c in a}
             for name, (a, ref) in rows.items()}
    body = [[name] + [f"{100 * v[c]['accuracy']:.1f} ({v[c]['ratio']:.2f})" if c in v else "-" for c in cols]
            for name, v in table.items()]
    md = markdown_table(["data"] + cols, body)
    known = [v["ratio"] for c, v in table["UGE"].items() if c != "Authorized" and v["ratio"] == v["ratio"]]
    worst = max(known) if known else float("nan")  # NaN: that hacker never learned the clean data either
    auth = table["UGE"]["Authorized"]["ratio"]
    verdict = (f"UGE: authorized ratio {auth:.2f}, worst hacker ratio {worst:.2f} -> "
               + ("separates" if auth >= AUTHORIZED_MIN and worst <= HACKER_MAX else
                  f"does NOT separate (target: authorized >= {AUTHORIZED_MIN}, every hacker <= {HACKER_MAX})"))
    scale = (f"CIFAR-10, {t1['train_size']} training images, {t1['test_size']} clean test images, "
             f"epochs {args.epochs or 60}, key resnet18 seed {args.key_seed}" + (", --quick" if args.quick else ""))
    text = f"# UGE Table 1 ({scale})\n\nTest accuracy % (learnability ratio against the clean reference row)\n\n" \
           f"{md}\n\n{verdict}\n\nStage times (s): {json.dumps(times)}\n"
    (out / "gpu_table1.md").write_text(text)
    atomic_write_json(out / "gpu_table1.json", {"scale": scale, "args": {k: str(v) for k, v in vars(args).items()},
                                                "rows": table, "verdict": verdict, "stage_seconds": times,
                                                "table1": t1, "iss": iss, **provenance()})
    grouped_bars(list(table), {c: [100 * v[c]["accuracy"] if c in v else float("nan") for v in table.values()]
                               for c in cols}, out / "gpu_table1.png", hline=100 / k,
                 title=f"UGE Table 1: {scale}")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
