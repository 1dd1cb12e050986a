"""Who trains what on a published dataset: the authorized user, and hackers (UGE's Table 1).

    cells = authorized_vs_hackers(published, test, keys=[key], recipe=auth_recipe,
                                  hackers=[Hacker("retrain", "cnn", 1), Hacker("distill", "cnn", 1)])

The authorized user trains its key network with the recipe named in the manifest; each hacker
trains from its own initialisation with the standard hacker recipe; "distill" hackers learn from
the trained authorized network's outputs on the published images. Accuracy is always on the
untouched clean test split.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import Sequence

from .attacks import AttackContext, get_attack
from .data import ImageDataset
from .errors import LearnlockError
from .models import NetSpec
from .report import learnability_ratio, markdown_table
from .training import Recipe, evaluate, fit


@dataclass(frozen=True)
class Hacker:
    attack: str   # a registered attack: retrain (Normal) or distill
    arch: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.arch} s{self.seed} {get_attack(self.attack).label}"


def train_authorized(train: ImageDataset, key: NetSpec, recipe: Recipe, progress: bool = True,
                     published: bool = True):
    """The authorized user's network trained on `train`: published data go through the key first
    (`key.prepare`: a lock key unlocks them); clean data (published=False, Table 1's Original row)
    are trained on as they are."""
    key.check_fits(train)
    data = key.prepare(train) if published else train
    return fit(key.build(), data, recipe, progress=progress, desc=f"authorized {key.arch}")


def authorized_vs_hackers(train: ImageDataset, test: ImageDataset, keys: Sequence[NetSpec], recipe: Recipe,
                          hackers: Sequence[Hacker], hacker_recipe: Recipe, progress: bool = True,
                          published: bool = True) -> dict:
    """Test accuracy of each authorized key and each hacker trained on `train` (published data, or
    the clean source with published=False)."""
    start = time.perf_counter()
    auth_models, auth_acc = [], []
    for key in keys:
        model = train_authorized(train, key, recipe, progress, published)
        auth_models.append(model)
        auth_acc.append(evaluate(model, test))
    out = {"authorized": statistics.fmean(auth_acc), "authorized_each": auth_acc, "hackers": {}}
    for h in hackers:
        context = AttackContext(teacher=auth_models[0])
        model = get_attack(h.attack)().train(train, h.arch, h.seed, replace(hacker_recipe, seed=h.seed),
                                             context, progress)
        out["hackers"][h.label] = evaluate(model, test)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    return out


def without_seeds(res: dict, hackers: Sequence[Hacker]) -> dict:
    """`res` with hacker columns named without their seed ("cnn Normal"), so rows measured with
    seed-shifted hackers line up in one table."""
    return {**res, "hackers": {k.replace(f" s{h.seed}", ""): v for (k, v), h in zip(res["hackers"].items(), hackers)}}


def table1_markdown(rows: dict[str, list[dict]], num_classes: int, clean_row: str = "Original") -> str:
    """Rows: name -> list over seeds of `authorized_vs_hackers` results. Cells: accuracy % mean ± std
    over seeds, then the learnability ratio (acc - chance) / (clean acc - chance) against the same
    column of `clean_row`."""
    if clean_row not in rows:
        raise LearnlockError(f"table needs the clean row {clean_row!r} to compute learnability ratios")
    columns = ["authorized"] + list(rows[clean_row][0]["hackers"])

    def values(results, col):
        return [r["authorized"] if col == "authorized" else r["hackers"][col] for r in results]

    clean = {c: statistics.fmean(values(rows[clean_row], c)) for c in columns}
    body = []
    for name, results in rows.items():
        cells = [name, str(len(results))]
        for c in columns:
            vals = values(results, c)
            m = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ratio = learnability_ratio(m, clean[c], num_classes)
            cells.append(f"{100 * m:.1f} ± {100 * sd:.1f} ({'n/a' if ratio != ratio else f'{ratio:.2f}'})")
        body.append(cells)
    return markdown_table(["data", "seeds", "Authorized"] + columns[1:], body)


def ratios(rows: dict[str, list[dict]], num_classes: int, clean_row: str = "Original") -> dict[str, dict]:
    """Per row: authorized ratio and the worst (highest) hacker ratio, from the means over seeds."""
    cols = list(rows[clean_row][0]["hackers"])
    clean_auth = statistics.fmean(r["authorized"] for r in rows[clean_row])
    clean_h = {c: statistics.fmean(r["hackers"][c] for r in rows[clean_row]) for c in cols}
    out = {}
    for name, results in rows.items():
        a = learnability_ratio(statistics.fmean(r["authorized"] for r in results), clean_auth, num_classes)
        h = {c: learnability_ratio(statistics.fmean(r["hackers"][c] for r in results), clean_h[c], num_classes)
             for c in cols}
        known = [v for v in h.values() if v == v]  # NaN: that hacker never learned clean data either
        out[name] = {"authorized_ratio": a, "worst_hacker_ratio": max(known) if known else float("nan"),
                     "hacker_ratios": h}
    return out
