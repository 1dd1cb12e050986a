"""Every learnlock command end to end at tiny size, on CUDA by default: the check to run first on
a GPU machine (target: under 3 minutes). Exits 1 on the first failing command, with its stderr.

    .venv/bin/python bench/gpu_smoke.py                                   # cuda, CIFAR-10 beside the repo
    .venv/bin/python bench/gpu_smoke.py --data cifar10-jpg.tar.xz --jobs 2
    .venv/bin/python bench/gpu_smoke.py --device cpu --per-class 2        # the same on a CPU

Commands: list; protect with every registered protection (tiny settings per method); train;
evaluate; table1; audit with every registered attack (purify with a tiny DDPM, --aux) on the
keyed data with its key; certify; federated. Data: the cifar10-jpg folder, or its .tar.xz
unpacked into a temporary folder; --per-class images per class for training and for testing.
The commands' output goes to OUT/smoke.log.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import cifar_folder, default_data, learnlock
from learnlock.protections import get_protection, list_protections

# Tiny settings per protection (--set NAME=VALUE); a method not listed runs with its defaults.
TINY_PROTECT = {
    "em": dict(surrogate="cnn", max_rounds=2, noise_steps=2, train_steps=2, batch_size=16),
    "rem": dict(surrogate="cnn", max_rounds=2, noise_steps=2, train_steps=2, batch_size=16, adv_steps=2),
    "pue": dict(surrogate="cnn", max_rounds=2, train_steps=2, batch_size=16, draws=2, train_draws=2,
                warmup_accuracy=0),
    "tap": dict(surrogate="cnn", recipe="cpu", steps=5),
    "uge": dict(epochs=1, encoder_resolution=32, diagnostics="false", batch_size=16),
    "keyed": dict(max_rounds=2, noise_steps=2, train_steps=2, batch_size=16),
    "lock": dict(max_rounds=2, train_steps=2, batch_size=16),
}
DDPM = dict(channels="[8,16]", train_steps=20, train_batch_size=8, num_train_timesteps=50, t_star=3, batch_size=16,
            samples=0)
# Tiny settings per attack (--set ATTACK.NAME=VALUE).
TINY_ATTACK = {
    "purify": DDPM, "purify-diffpure": DDPM,
    "recover": dict(epochs=1, eta=0.5, etas="[0.5]"), "recover-random": dict(trials=2, eta=0.5, etas="[0.5]"),
    "adversarial-training": dict(steps=2), "ueraser": dict(repeats=2),
}


def sets(settings: dict, prefix: str = "") -> list[str]:
    return [a for k, v in settings.items() for a in ("--set", f"{prefix}{k}={v}")]


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
            preset = ["--preset", "paper"] if method == "uge" else []
            learnlock("protect", "--method", method, "--data", spec, "--per-class", k, *preset, *key,
                      *sets(TINY_PROTECT.get(method, {})), "--authorized-epochs", "1", *dev, *quiet,
                      "--out", out / f"pub-{method}", log=log)
        uge, uge_key = out / "pub-uge", out / "uge.key.safetensors"
        learnlock("train", "--authorized", uge_key, "--data", uge, *test, "--out", out / "trained.safetensors",
                  *dev, *quiet, log=log)
        learnlock("evaluate", "--train", spec, "--per-class", k, *test, "--nets", "cnn,resnet18", "--seeds", "0,1",
                  "--epochs", "1", "--out", out / "evaluate", *dev, *jobs, *quiet, log=log)
        learnlock("table1", "--published", uge, "--authorized", uge_key, *test, "--hackers", "cnn:1,resnet18:1",
                  "--distill", "cnn:1", "--epochs", "1", "--out", out / "table1", *dev, *jobs, *quiet, log=log)
        attack_sets = [a for name, s in TINY_ATTACK.items() for a in sets(s, f"{name}.")]
        learnlock("audit", out / "pub-keyed", "--authorized", out / "keyed.key.safetensors", *test, "--aux", spec,
                  "--aux-per-class", k, "--attacks", "all", "--nets", "cnn", "--epochs", "1", *attack_sets,
                  "--out", out / "audit", *dev, *jobs, *quiet, log=log)
        learnlock("certify", uge, *test, "--arch", "cnn", "--n", "20", "--epochs", "1", "--out", out / "certify",
                  *dev, *quiet, log=log)
        learnlock("federated", "--data", spec, "--per-class", k, "--test-per-class", k, "--clients", "2",
                  "--global-arch", "cnn", "--global-seed", "1", *sets(TINY_PROTECT["uge"]), "--epochs", "1",
                  "--out", out / "federated", *dev, *jobs, *quiet, log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the unpacked data (and the outputs unless --out)
    print(f"all commands passed on {args.device} in {time.perf_counter() - start:.1f} s"
          + (f"; outputs in {out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
