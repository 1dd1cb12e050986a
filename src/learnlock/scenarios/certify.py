"""Certified (q, eta)-learnability by parametric smoothing (Wang et al., "Provably Unlearnable
Data Examples", NDSS 2025).

Given a surrogate theta trained on a published dataset, draw N weight samples
theta_i = theta + sigma * N(0, I) over every parameter (BatchNorm running statistics are
buffers and stay) and record each sample's clean test accuracy a_i. For any classifier
theta' with ||theta' - theta||_2 <= eta, the q-quantile of the smoothed accuracy around theta'
is at most the q_bar-quantile of the accuracy around theta, with
    q_bar = Phi(Phi^-1(q) + eta / sigma).
That quantile is bounded from above, at confidence 1 - alpha, by the order statistic a_(k)
(the k-th smallest, 1-based) with k the smallest index such that
    P[Binomial(N, q_bar) <= k - 1] >= 1 - alpha
(at most k - 1 samples fall below the q_bar-quantile). When no k <= N qualifies the
certificate abstains. The bound is the certified learnability: lower means less learnable.
Defaults follow the paper's scripts: q 0.9, sigma 0.25, N 1000, alpha 0.01.

    accs = sample_accuracies(model, test, sigma=0.25, n=1000)
    rows = certify_accuracies(accs, q=0.9, sigma=0.25, etas=[0, 0.1, 0.5], alpha=0.01)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import binom, norm
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..cells import CellCache, cell_inputs, check_cache_dir
from ..data import ImageDataset
from ..data.published import check_writable
from ..errors import LearnlockError, require
from ..device import current_device
from ..losses import WeightNoiseLoss, generator_on, noisy_params
from ..models import MODELS, NetSpec, create_model
from ..files import atomic_write_json
from ..provenance import result_provenance
from ..report.result import Result
from ..training import check_compatible, cross_entropy, evaluate, fit
from .opening import open_published

# The eta grid of the paper's certification script (L2 radius in parameter space).
DEFAULT_ETAS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                0.9, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


@dataclass(frozen=True)
class CertifySettings:
    q: float = 0.9           # quantile of the smoothed accuracy that is certified
    sigma: float = 0.25      # std of the Gaussian weight noise (parameter units)
    n: int = 1000            # weight samples
    alpha: float = 0.01      # 1 - confidence
    etas: tuple[float, ...] = field(default=DEFAULT_ETAS)  # L2 radii in parameter space
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "etas", tuple(float(e) for e in self.etas))
        require(0 < self.q < 1, f"certify: q is a quantile in (0, 1), got {self.q}")
        require(self.sigma > 0 and math.isfinite(self.sigma), f"certify: sigma must be a positive number, got {self.sigma}")
        require(isinstance(self.n, int) and self.n >= 1, f"certify: n is a number of weight samples >= 1, got {self.n!r}")
        require(0 < self.alpha < 1, f"certify: alpha is 1 - confidence, in (0, 1) (0.01 = 99%), got {self.alpha}")
        require(len(self.etas) > 0 and all(e >= 0 and math.isfinite(e) for e in self.etas),
                f"certify: etas must be finite radii >= 0, got {self.etas}")


def q_bar(q: float, eta: float, sigma: float) -> float:
    """The quantile around theta that bounds the q-quantile around any theta' within eta."""
    return float(norm.cdf(norm.ppf(q) + eta / sigma))


def order_statistic_index(n: int, qb: float, alpha: float) -> int | None:
    """Smallest 1-based k with P[Bin(n, qb) <= k - 1] >= 1 - alpha, or None (abstain)."""
    ks = np.arange(1, n + 1)
    ok = np.nonzero(binom.cdf(ks - 1, n, qb) >= 1 - alpha)[0]
    return int(ks[ok[0]]) if len(ok) else None


def certify_accuracies(accuracies: Sequence[float], q: float, sigma: float, etas: Sequence[float],
                       alpha: float) -> list[dict]:
    """One row per eta: q_bar, the order-statistic index k (1-based) and the certified bound
    a_(k), or abstain (k and bound None)."""
    acc = np.sort(np.asarray(accuracies, dtype=float))
    if acc.size == 0 or not np.isfinite(acc).all():
        raise LearnlockError("certify needs finite sampled accuracies; got none or NaN")
    rows = []
    for eta in etas:
        qb = q_bar(q, eta, sigma)
        k = order_statistic_index(len(acc), qb, alpha)
        rows.append({"eta": float(eta), "q_bar": qb, "k": k,
                     "bound": None if k is None else float(acc[k - 1]), "abstain": k is None})
    return rows


@torch.no_grad()
def sample_accuracies(model: nn.Module, test: ImageDataset, sigma: float, n: int, seed: int = 0,
                      batch_size: int = 1000, device: str | torch.device | None = None,
                      progress: bool = True, done: Sequence[float] = (), on_sample=None) -> list[float]:
    """Clean test accuracy of theta + sigma * N(0, I) for samples len(done) .. n - 1 (the
    generator of sample i is seeded by (seed, i), so a resumed run draws the same weights)."""
    device = torch.device(device) if device else next(model.parameters()).device
    model.to(device).eval()
    check_compatible(model, test, device)
    x = test.images.to(device)
    y = test.labels.to(device)
    out = list(done)
    for i in tqdm(range(len(out), n), desc="certify (weight samples)", disable=not progress, leave=False,
                  initial=len(out), total=n):
        params = noisy_params(model, sigma, generator_on(device, seed * 1_000_003 + i))
        correct = 0
        for j in range(0, len(x), batch_size):
            logits = functional_call(model, params, (x[j:j + batch_size].float().div(255),))
            correct += (logits.argmax(1) == y[j:j + batch_size]).sum().item()
        out.append(correct / len(x))
        if on_sample:
            on_sample(out)
    return out


@dataclass
class Certificate(Result):
    """A certificate; `save(out)` writes certify.json, certify.md and certify.png."""

    stem = "certify"
    settings: CertifySettings
    accuracies: list[float]           # one per weight sample, in draw order
    base_accuracy: float              # the unperturbed surrogate
    rows: list[dict]                  # per eta
    surrogate: dict                   # how the surrogate came about
    test: dict
    published: dict | None = None     # {"path", "fingerprint"} of the published folder (certify_folder)
    chance: float | None = field(default=None, repr=False)  # 1 / classes, the plot's chance line

    def empirical_quantile(self) -> float:
        return float(np.quantile(self.accuracies, self.settings.q))

    def to_dict(self) -> dict:
        return {"settings": asdict(self.settings), "base_accuracy": self.base_accuracy,
                "empirical_q_quantile": self.empirical_quantile(), "rows": self.rows,
                "accuracies": self.accuracies, "surrogate": self.surrogate, "test": self.test,
                "published": self.published, **result_provenance()}

    def markdown(self) -> str:
        s = self.settings
        lines = [f"Certified (q={s.q}, eta)-learnability, sigma={s.sigma}, N={len(self.accuracies)}, "
                 f"confidence {1 - s.alpha:.2%}; surrogate accuracy {100 * self.base_accuracy:.2f}%, "
                 f"empirical {s.q}-quantile of the sampled accuracies {100 * self.empirical_quantile():.2f}%",
                 "", "| eta | q_bar | k | certified learnability (%) |", "|---|---|---|---|"]
        for r in self.rows:
            bound = "abstain" if r["abstain"] else f"{100 * r['bound']:.2f}"
            lines.append(f"| {r['eta']:g} | {r['q_bar']:.4f} | {r['k'] if r['k'] else '-'} | {bound} |")
        return "\n".join(lines) + "\n"

    def plot(self, out: Path) -> list[Path]:
        return [plot_certificates({"surrogate": self}, Path(out) / "certify.png", chance=self.chance)]


def certify(model: nn.Module, test: ImageDataset, settings: CertifySettings | None = None, *,
            out_dir: str | Path | None = None, surrogate: dict | None = None, progress: bool = True,
            device: str | torch.device | None = None, published: dict | None = None) -> Certificate:
    """Sample, bound and (with out_dir) write certify.json, certify.md and certify.png. Samples
    are saved as they come, so a killed run resumes from out_dir with the same settings.
    `published` ({"path", "fingerprint"}: `certify_folder` gives it) is recorded in certify.json."""
    s = settings or CertifySettings()
    base = evaluate(model, test, device=device)
    out = Path(out_dir) if out_dir else None
    state_path = out / ".certify-samples.json" if out else None
    drawn_on = (torch.device(device) if device else next(model.parameters()).device).type
    ident = {"settings": {k: v for k, v in asdict(s).items() if k not in ("etas", "n")},
             "surrogate": surrogate or {}, "test": test.fingerprint(),
             "drawn_on": drawn_on}  # weight noise is drawn on the device: a GPU run's samples are not a CPU run's
    done: list[float] = []
    if state_path and state_path.exists():
        saved = json.loads(state_path.read_text())
        if saved.get("ident") == json.loads(json.dumps(ident)):
            done = saved["accuracies"][: s.n]

    def save_partial(accs):
        if state_path and (len(accs) % 25 == 0 or len(accs) == s.n):
            atomic_write_json(state_path, {"ident": ident, "accuracies": accs})

    if out:
        out.mkdir(parents=True, exist_ok=True)
    accs = sample_accuracies(model, test, s.sigma, s.n, s.seed, device=device, progress=progress,
                             done=done, on_sample=save_partial)
    cert = Certificate(s, accs, base, certify_accuracies(accs, s.q, s.sigma, s.etas, s.alpha),
                       surrogate or {}, {"source": test.source, "size": len(test)}, published, 1 / test.num_classes)
    if out:
        cert.save(out)
    return cert


def train_surrogate(published: ImageDataset, arch: str, recipe, *, seed: int = 0, sigma: float = 0.0,
                    draws: int = 1, out_dir=None, progress: bool = True, log=lambda message: None,
                    cache: CellCache | None = None):
    """The surrogate to certify: `arch` trained on the published data, with Gaussian weight noise
    `sigma` (`draws` samples per step; the paper trains with the certification's sigma). Its weights
    are a cell of `cache` (learnlock.cells; default `out_dir`/cells), found again by a rerun with
    the same inputs and code; with `out_dir` it is also saved there (surrogate.safetensors and
    surrogate.json). Returns (NetSpec, info)."""
    MODELS.get(arch)
    info = {"arch": arch, "seed": seed, "recipe": recipe.to_dict(), "train_sigma": sigma, "train_draws": draws,
            "published": published.fingerprint()}
    out = Path(out_dir) if out_dir else None
    if cache is None and out:
        cache = CellCache(out / "cells")

    def compute() -> dict:
        model = create_model(arch, published.num_classes, published.in_channels, seed=seed)
        loss = WeightNoiseLoss(model, sigma, draws, seed=seed) if sigma > 0 else cross_entropy
        log(f"training a {arch} surrogate on {len(published)} published images (weight noise sigma {sigma}, "
            f"{recipe.epochs} epochs)")
        return fit(model, published, recipe, loss=loss, progress=progress, desc="surrogate").state_dict()

    if cache is None:
        state = compute()
    else:
        inputs = cell_inputs(data=published, net=arch, seed=seed, recipe=recipe, train_sigma=sigma, train_draws=draws)
        hits = cache.hits
        state = cache.run_tensors("surrogate", inputs, compute)
        if cache.hits > hits:
            log(f"reusing the surrogate in {cache.path('surrogate', inputs, '.safetensors')}")
    spec = NetSpec(arch, published.num_classes, published.in_channels, {},
                   {k: v.detach().cpu().contiguous().clone() for k, v in state.items()})
    if out:
        out.mkdir(parents=True, exist_ok=True)
        spec.save(out / "surrogate.safetensors", overwrite=True)
        atomic_write_json(out / "surrogate.json", info)
    return spec, info


def certify_folder(published_dir, settings: CertifySettings, *, out_dir, recipe, test: str | None = None,
                   test_per_class: int | None = None, subset_seed: int = 0, arch: str = "resnet18",
                   weights=None, train_sigma: float | None = None, train_draws: int = 1, progress: bool = True,
                   log=lambda message: None, cache=None) -> Certificate:
    """`certify` a published folder: against `test` (a dataset spec; default the source's test
    split), with a given surrogate (`weights`, a NetSpec file) or one trained here (`arch`, weight
    noise `train_sigma`, default the certification's sigma). The folder and the test set are opened by
    `open_published`'s policy (certify needs no key: a key shipped in the folder checks the manifest,
    else it is used unverified). `cache`: the cell cache of the trained surrogate (a folder or a
    `CellCache`; default `out_dir`/cells)."""
    check_writable(out_dir)
    if cache is not None and not isinstance(cache, CellCache):
        cache = CellCache(check_cache_dir(cache))
    spec = NetSpec.load(weights) if weights else None  # a wrong file or name fails before any data are read
    if spec is None:
        MODELS.get(arch)
    opened = open_published(published_dir, test=test, test_per_class=test_per_class, clean=False,
                            subset_seed=subset_seed, log=log)
    published, manifest, test_set = opened.data, opened.manifest, opened.test
    if weights:
        spec.check_fits(published, "surrogate")
        surrogate = {"weights": str(weights), "fingerprint": spec.fingerprint}
    else:
        spec, surrogate = train_surrogate(published, arch, recipe, seed=settings.seed, out_dir=out_dir,
                                          sigma=settings.sigma if train_sigma is None else train_sigma,
                                          draws=train_draws, progress=progress, log=log, cache=cache)
    surrogate["method"] = manifest.get("method")
    return certify(spec.build(), test_set, settings, out_dir=out_dir, surrogate=surrogate, progress=progress,
                   device=current_device(),
                   published={"path": str(published_dir), "fingerprint": opened.fingerprint})


def plot_certificates(certs: dict[str, Certificate], path, chance: float | None = None) -> Path:
    """Certified learnability vs eta, one line per certificate, with its sampled accuracies as a
    strip at eta = 0 and its empirical q-quantile as a dotted line."""
    from ..report.plots import plt, save_figure

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    for i, (label, c) in enumerate(certs.items()):
        line = [(r["eta"], 100 * r["bound"]) for r in c.rows if not r["abstain"]]
        color = f"C{i}"
        if line:
            ax.plot(*zip(*line), marker="o", color=color, label=f"{label}: certified bound")
        else:  # every eta abstained: say so rather than leave the panel empty
            ax.text(0.5, 0.5 - 0.08 * i, f"{label}: abstained at every eta (too few samples for q={c.settings.q}, "
                    f"alpha={c.settings.alpha})", transform=ax.transAxes, ha="center", color=color, fontsize=8)
        ax.axhline(100 * c.empirical_quantile(), color=color, ls=":", lw=1,
                   label=f"{label}: empirical q-quantile")
        ax2.hist(100 * np.asarray(c.accuracies), bins=20, color=color, alpha=0.5, label=label,
                 orientation="horizontal")
    if chance is not None:
        ax.axhline(100 * chance, color="grey", ls="--", lw=1, label="chance")
    s = next(iter(certs.values())).settings
    ax.set_xlabel("eta (L2 radius in parameter space)")
    ax.set_ylabel("certified learnability: test accuracy (%)")
    ax.set_title(f"certified (q={s.q}, eta)-learnability, sigma={s.sigma}, {1 - s.alpha:.0%} confidence")
    ax.legend(fontsize=7)
    ax2.set_xlabel("weight samples")
    ax2.set_ylabel("sampled test accuracy (%)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
