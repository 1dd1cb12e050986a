"""Is a protection's noise a shortcut, and is what grayscale keeps of it still one? (issue 20, section 3)

For protected pixels from the cell cache (a `protect` cell's .safetensors) and the clean split they
were made from, measure the noise delta = protected - clean and its luma image (ITU-R 601, what ISS
grayscale keeps):
- linear separability (Yu et al., "Availability attacks create shortcuts", KDD 2022): a linear
  softmax classifier fitted on the noise alone of 250 images per class and tested on 250 others
  per class; near 1.0 means the noise is a shortcut any network can take;
- the share of the noise's energy in its class means (a class-wise pattern; 1/n for iid noise);
- RMS in /255 units, of the noise and of its luma image;
- the clean images' own linear separability (colour and luma), the content a shortcut competes with.

    PYTHONPATH=src python bench/noise_shortcuts.py runs/cells/protect/HASH.safetensors --per-class 1000 \\
        --name em-fastnet --out docs/bench/cifar10k/noise-shortcuts

    PYTHONPATH=src python bench/noise_shortcuts.py --row em-paper --per-class 100 --name "em-paper 1k"

The clean split is checked against the fingerprint the cell recorded, so the pixels cannot be
compared with the wrong originals; --row makes the noise instead (a protect cell of --cache, reused
by the tier's scripts). Results accumulate in --out/noise_shortcuts.json by --name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tier10k  # noqa: E402  (the tier's data and splits)

from learnlock.attacks import iss  # noqa: E402
from learnlock.cells import CellCache, code_version  # noqa: E402
from learnlock.data.splits import load_split  # noqa: E402
from learnlock.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from learnlock.provenance import provenance  # noqa: E402
from learnlock.recipe import get_recipe  # noqa: E402
from learnlock.scenarios.shards import concat  # noqa: E402

LUMA = torch.tensor(iss.LUMA).view(1, 3, 1, 1)  # what ISS grayscale keeps


def linear_separability(x: torch.Tensor, labels: torch.Tensor, per_class: int = 250, seed: int = 0) -> float:
    """Held-out accuracy of an L2-regularised linear softmax classifier on flattened `x` (pixel units,
    centred), fitted by L-BFGS on `per_class` items of each class and tested on as many others."""
    g = torch.Generator().manual_seed(seed)
    fit_idx, test_idx = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = min(per_class, len(idx) // 2)
        fit_idx.append(idx[:n])
        test_idx.append(idx[n:2 * n])
    fit_idx, test_idx = torch.cat(fit_idx), torch.cat(test_idx)
    # in pixel units (1/255), centred, never standardised per feature: standardising would blow a
    # numerically-zero luma image (rounding) up to unit variance and call it a shortcut
    x = x.flatten(1).float()
    mu = x[fit_idx].mean(0)
    xf, xt = x[fit_idx] - mu, x[test_idx] - mu
    classes = int(labels.max()) + 1
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xf @ w + b, labels[fit_idx]) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == labels[test_idx]).float().mean())


def class_mean_share(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of sum ||x_i||^2 that lies in the class means (sum over classes of n_c ||mean_c||^2)."""
    x = x.flatten(1).float()
    within = sum(float((labels == c).sum()) * x[labels == c].mean(0).pow(2).sum() for c in labels.unique())
    return float(within / x.pow(2).sum())


def noise_stats(clean: torch.Tensor, protected: torch.Tensor, labels: torch.Tensor) -> dict:
    """The noise's and its luma image's RMS (/255), class-mean share and linear separability."""
    delta = protected.float() - clean.float()
    luma = (delta * LUMA).sum(1, keepdim=True)
    return {"noise_rms_255": float(delta.pow(2).mean().sqrt()), "luma_rms_255": float(luma.pow(2).mean().sqrt()),
            "noise_class_mean_share": class_mean_share(delta, labels),
            "luma_class_mean_share": class_mean_share(luma, labels),
            "noise_linear_acc": linear_separability(delta, labels),
            "luma_linear_acc": linear_separability(luma, labels),
            # the images' own content, the reference a shortcut is easier than
            "clean_linear_acc": linear_separability(clean, labels),
            "clean_luma_linear_acc": linear_separability((clean.float() * LUMA).sum(1, keepdim=True), labels)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pixels", nargs="?", help="a protect cell's .safetensors (its .json record beside it)")
    p.add_argument("--row", choices=[k for k, v in tier10k.PROTECTIONS.items() if v],
                   help="instead of PIXELS: protect the split with this tier10k row (a cell of --cache) and measure it")
    p.add_argument("--cache", default="runs/cells", help="with --row: the cell cache")
    p.add_argument("--name", required=True, help="the row's name in the output (e.g. 'em-fastnet 10k')")
    p.add_argument("--data", default=tier10k.DATA)
    p.add_argument("--per-class", type=int, default=1000, help="owner images per class the pixels were made from")
    p.add_argument("--aux-as-owner", type=int, default=0, metavar="N",
                   help="the owner set was extended by the first N aux images per class (tier10k's size probe)")
    p.add_argument("--out", default="docs/bench/cifar10k/noise-shortcuts")
    args = p.parse_args(argv)
    if (args.pixels is None) == (args.row is None):
        p.error("give either PIXELS (a protect cell's .safetensors) or --row NAME")
    clean = load_split(args.data, "owner", args.per_class)
    if args.aux_as_owner:
        clean = concat([clean, load_split(args.data, "aux", args.aux_as_owner)], source=clean.source)
    if args.row:
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        protected, made = tier10k.protect(CellCache(args.cache), args.row, clean, get_recipe("fast"), log)[:2]
        cell, version, protect_s = None, code_version(), made.get("wall_time_s")
    else:
        try:
            protected, made = tier10k.load_protect_cell(args.pixels, clean)
        except ValueError as e:
            p.error(str(e))
        cell, version, protect_s = Path(args.pixels).stem, made["code_version"], made.get("wall_time_s")
    start = time.perf_counter()
    stats = noise_stats(clean.images, protected, clean.labels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "noise_shortcuts.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else {}
    rows[args.name] = {**stats, "images": len(clean), "cell": cell, "row": args.row, "code_version": version,
                       "protect_s": protect_s, "seconds": round(time.perf_counter() - start, 1)}
    atomic_write_json(path, {"date": time.strftime("%Y-%m-%d"), **provenance(), "rows": rows})
    lines = ["| noise | images | RMS /255 | luma RMS /255 | class-mean share (noise / luma) | "
             "linear separability (noise / luma) | the clean images' (colour / luma) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['images']} | {r['noise_rms_255']:.2f} | {r['luma_rms_255']:.2f} | "
              f"{r['noise_class_mean_share']:.3f} / {r['luma_class_mean_share']:.3f} | "
              f"{r['noise_linear_acc']:.3f} / {r['luma_linear_acc']:.3f} | "
              f"{r['clean_linear_acc']:.3f} / {r['clean_luma_linear_acc']:.3f} |" for n, r in rows.items()]
    atomic_write_bytes(out / "noise_shortcuts.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
