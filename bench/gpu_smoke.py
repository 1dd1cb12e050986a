"""Every learnlock command end to end at tiny size, on CUDA by default: the check to run first on
a GPU machine (target: under 3 minutes). Exits 1 on the first failing command, with its stderr.

    .venv/bin/python bench/gpu_smoke.py                                   # cuda, CIFAR-10 beside the repo
    .venv/bin/python bench/gpu_smoke.py --data cifar10-jpg.tar.xz --jobs 2
    .venv/bin/python bench/gpu_smoke.py --device cpu --per-class 2        # the same on a CPU

Commands: list; protect with every registered protection at its smoke preset (the tiny settings
each method declares, which the tests run too); train; evaluate; table1; audit with every
registered attack at its smoke preset (purify with a tiny DDPM, --aux) on the keyed data with its
key; certify; federated (uge at its smoke preset). Data: the cifar10-jpg folder, or its .tar.xz
unpacked into a temporary folder; --per-class images per class for training and for testing.
The commands' output goes to OUT/smoke.log.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import cifar_folder, default_data, learnlock
from learnlock.attacks import get_attack, list_attacks
from learnlock.protections import get_protection, list_protections


def attack_smoke_sets() -> list[str]:
    """Every attack's own smoke preset as --set ATTACK.NAME=VALUE (JSON values, as the CLI reads them)."""
    return [a for name in list_attacks() for k, v in get_attack(name).presets["smoke"].items()
            for a in ("--set", f"{name}.{k}={json.dumps(v)}")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data(), help="cifar10-jpg folder or cifar10-jpg.tar.xz")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--per-class", type=int, default=4, help="training and test images per class (default 4)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs of evaluate, table1, audit, federated (default 2)")
    p.add_argument("--out", type=Path, help="keep the outputs here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="learnlock-smoke-"))
    out = args.out or tmp / "out"
    if args.out and out.exists():
        shutil.rmtree(out)  # a fresh run: the commands refuse to overwrite (protect) or resume (audit)
    out.mkdir(parents=True)
    log = out / "smoke.log"
    try:
        folder = cifar_folder(args.data, tmp / "data")
        spec, k, dev = f"folder:{folder}", str(args.per_class), ["--device", args.device]
        test = ["--test", spec, "--test-per-class", k]
        jobs = ["--jobs", str(args.jobs)]
        quiet = ["--no-progress"]
        learnlock("list", log=log)
        for method in list_protections():
            key = (["--authorized", "cnn", "--key-seed", "1", "--key-out", out / f"{method}.key.safetensors"]
                   if get_protection(method).needs_key else [])
            learnlock("protect", "--method", method, "--data", spec, "--per-class", k, "--preset", "smoke", *key,
                      "--authorized-epochs", "1", *dev, *quiet, "--out", out / f"pub-{method}", log=log)
        uge, uge_key = out / "pub-uge", out / "uge.key.safetensors"
        learnlock("train", "--authorized", uge_key, "--data", uge, *test, "--out", out / "trained.safetensors",
                  *dev, *quiet, log=log)
        learnlock("evaluate", "--train", spec, "--per-class", k, *test, "--nets", "cnn,resnet18", "--seeds", "0,1",
                  "--epochs", "1", "--out", out / "evaluate", *dev, *jobs, *quiet, log=log)
        learnlock("table1", "--published", uge, "--authorized", uge_key, *test, "--hackers", "cnn:1,resnet18:1",
                  "--distill", "cnn:1", "--epochs", "1", "--out", out / "table1", *dev, *jobs, *quiet, log=log)
        # 4 aux images per class at least: distill-proxy's smoke budget is 40 queries
        learnlock("audit", out / "pub-keyed", "--authorized", out / "keyed.key.safetensors", *test, "--aux", spec,
                  "--aux-per-class", str(max(args.per_class, 4)), "--attacks", "all", "--nets", "cnn", "--epochs", "1", *attack_smoke_sets(),
                  "--out", out / "audit", *dev, *jobs, *quiet, log=log)
        learnlock("certify", uge, *test, "--arch", "cnn", "--n", "20", "--epochs", "1", "--out", out / "certify",
                  *dev, *quiet, log=log)
        learnlock("federated", "--data", spec, "--per-class", k, "--test-per-class", k, "--clients", "2",
                  "--global-arch", "cnn", "--global-seed", "1", "--preset", "smoke", "--epochs", "1",
                  "--out", out / "federated", *dev, *jobs, *quiet, log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the unpacked data (and the outputs unless --out)
    print(f"all commands passed on {args.device} in {time.perf_counter() - start:.1f} s"
          + (f"; outputs in {out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
