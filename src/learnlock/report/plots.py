"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import math
from statistics import fmean
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write_bytes  # noqa: E402


def figure_png(fig, dpi: int = 120) -> bytes:
    """PNG bytes of a figure (tight box); a pyplot figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path) -> Path:
    """Write a pyplot figure as PNG (120 dpi, tight box) atomically to `path` and close it."""
    atomic_write_bytes(path, figure_png(fig))
    return Path(path)


def class_grid_png(protected: torch.Tensor, labels, classes, clean: torch.Tensor | None = None, n: int = 10) -> bytes:
    """PNG bytes: the first image of each class (up to `n` classes) as columns; rows clean / noise
    (scaled to the full range, grey = 0) / protected, or the protected row alone without `clean`.
    Pixels shown as pixels (nearest), so an 8x8 image stays 8x8 blocks. uint8 N x C x H x W."""
    from matplotlib.figure import Figure

    labels = [int(v) for v in labels]
    pick = first_of_each_class(labels, n)
    rows = [("protected", protected[pick].float() / 255)]
    if clean is not None:
        noise = protected[pick].float() - clean[pick].float()
        scale = noise.abs().amax().clamp_min(1)
        rows = [("clean", clean[pick].float() / 255), (f"noise (x{255 / float(scale):.0f})", (noise / scale + 1) / 2),
                *rows]
    fig = Figure(figsize=(1.1 * len(pick) + 0.6, 1.2 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), len(pick), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i, img in enumerate(images):
            ax = axes[r][i]
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(classes[labels[pick[i]]]), fontsize=8)
        axes[r][0].set_ylabel(name, fontsize=8)
    return figure_png(fig)


def first_of_each_class(labels, n: int) -> list[int]:
    """Index of the first item of each class, in class order, for at most `n` classes."""
    first: dict[int, int] = {}
    for i, c in enumerate(labels):
        first.setdefault(int(c), i)
    return [first[c] for c in sorted(first)][:n]


def image_grid(clean: torch.Tensor, protected: torch.Tensor, labels, classes, path, n: int = 8,
               title: str = "") -> Path:
    """Clean / noise (scaled to the full range) / protected rows, as the UGE paper's Fig. 4: the
    first image of each class (up to `n` classes), so a class-wise pattern shows as such.
    clean, protected: uint8 N x C x H x W."""
    labels = [int(v) for v in labels]
    pick = first_of_each_class(labels, n)
    clean, protected, labels = clean[pick], protected[pick], [labels[i] for i in pick]
    n = len(pick)
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    noise = protected.float() - clean.float()
    scale = noise.abs().amax().clamp_min(1)
    for i in range(n):
        imgs = [clean[i].float() / 255, (noise[i] / scale + 1) / 2, protected[i].float() / 255]
        for r, img in enumerate(imgs):
            ax = axes[r][i]
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][i].set_title(classes[int(labels[i])], fontsize=8)
    for r, name in enumerate(["clean", f"noise (x{255 / float(scale):.0f})", "protected"]):
        axes[r][0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def grouped_bars(groups: list[str], series: dict[str, list[float]], path, ylabel: str = "test accuracy (%)",
                 title: str = "", hline: float | None = None, hline_label: str = "chance") -> Path:
    """One group of bars per entry of `groups`, one bar per series (e.g. authorized vs hackers)."""
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.8 / max(len(series), 1)
    for j, (name, vals) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, vals, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=15, fontsize=8)
    ax.set_ylabel(ylabel)
    if hline is not None:
        ax.axhline(hline, color="gray", ls="--", lw=1, label=hline_label)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside, never on a bar
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def scatter_front(points: dict[str, tuple[float, float]], path, title: str = "",
                  target: tuple[float, float] | None = (0.9, 0.5),
                  xlabel: str = "worst hacker learnability ratio") -> Path:
    """Authorized ratio (y) vs worst hacker ratio (x) per configuration; the target region shaded."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    hi = max([1.2] + [max(p) + 0.1 for p in points.values()])
    for name, (worst, auth) in points.items():
        ax.scatter(worst, auth)
        ax.annotate(name, (worst, auth), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if target:
        ax.fill_between([-0.2, target[1]], target[0], hi, color="green", alpha=0.1, label="target")
    ax.plot([-0.2, hi], [-0.2, hi], color="gray", lw=0.8, ls=":", label="no selectivity")
    ax.set_xlim(-0.2, hi)
    ax.set_ylim(-0.2, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("authorized learnability ratio")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def line_plot(x: list[float], series: dict[str, list[float]], path, xlabel: str, ylabel: str = "test accuracy (%)",
              title: str = "", hline: float | None = None, hline_label: str = "chance",
              points: dict[str, tuple[float, dict[str, float]]] | None = None) -> Path:
    """One line per series over `x` (e.g. accuracy vs the number of authorized networks);
    `points` adds labelled off-line sets {label: (x, {series: y})} as open markers in the
    colour of their series (e.g. a mixed-architecture set)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = {}
    for name, ys in series.items():
        (line,) = ax.plot(x, ys, marker="o", label=name)
        colours[name] = line.get_color()
    for label, (px, values) in (points or {}).items():
        ax.scatter([], [], marker="D", s=45, facecolors="none", edgecolors="k", label=f"{label} (open diamonds)")
        for name, y in values.items():
            ax.scatter([px], [y], marker="D", s=45, facecolors="none", edgecolors=colours.get(name, "k"))
        ax.annotate(label, (px, max(values.values())), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if hline is not None:
        ax.axhline(hline, color="gray", ls="--", lw=1, label=hline_label)
    ax.set_xticks(sorted(set(x) | {p[0] for p in (points or {}).values()}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def grid_png(images: torch.Tensor, title: str) -> bytes:
    """uint8 N x C x H x W -> PNG bytes of a square grid (e.g. a DDPM's samples). A standalone
    Figure at 100 dpi, so pyplot's global state is not touched."""
    from matplotlib.figure import Figure

    n = len(images)
    k = math.ceil(math.sqrt(n))
    fig = Figure(figsize=(1.2 * k, 1.2 * k + 0.3))
    for i in range(k * k):
        ax = fig.add_subplot(k, k, i + 1)
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
    fig.suptitle(title, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def recovery_plot(curves: dict, path: Path, chance: float) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row, by_net in curves.items():
        for net, cells in by_net.items():
            etas = [c["eta"] for c in cells[0]["curve"]]
            accs = [100 * fmean(cell["curve"][i]["accuracy"] for cell in cells) for i in range(len(etas))]
            ax.plot(etas, accs, marker="o", label=f"{row} {net}")
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xlabel("eta (L2 radius of the weight change)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title("weight-space recovery vs eta")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
