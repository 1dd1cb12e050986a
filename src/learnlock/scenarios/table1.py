"""Who trains what on a published dataset: the authorized user, and hackers (UGE's Table 1).

    result = table1(["pub/uge"], "pub/uge.key.safetensors", hackers=[Hacker("retrain", "cnn", 1)])
    print(result.markdown()); result.save("runs/table1")
    cells = authorized_vs_hackers(published, test, keys=[key], recipe=auth_recipe,
                                  hackers=[Hacker("retrain", "cnn", 1), Hacker("distill", "cnn", 1)])

The authorized user trains its key network with the recipe named in the manifest; each hacker
trains from its own initialisation with the standard hacker recipe; "distill" hackers learn from
the trained authorized network's outputs on the published images. Accuracy is always on the
untouched clean test split.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from ..attacks import get_attack
from ..cells import CellCache, check_cache_dir
from ..data import ImageDataset
from ..errors import LearnlockError, LearnlockWarning
from ..jobs import Workers, arrive, check_executor, runs_here
from ..keys import wrong_key
from ..models import MODELS, NetSpec
from ..data.published import check_writable
from ..provenance import result_provenance
from ..report import learnability_ratio, markdown_table
from ..report.plots import grouped_bars, image_grid
from ..report.result import Result
from ..training import Recipe, get_recipe
from .authorized import authorized_cell
from .hackers import hacker_cell
from .opening import SHIPPED_KEY, check_same_items, open_published

# UGE's bar for "separates": the authorized net keeps 90% of its clean learnability, every hacker
# keeps at most half of its own.
AUTHORIZED_MIN, HACKER_MAX = 0.9, 0.5


# a hacker who knows the scheme and guesses a key: the authorized architecture from another seed
# (`learnlock.keys.wrong_key`), trained like the authorized network (its recipe, the key's prepare)
WRONG_KEY = "wrong-key"


@dataclass(frozen=True)
class Hacker:
    attack: str   # a registered attack: retrain (Normal) or distill; or WRONG_KEY
    arch: str     # the hacker's network (for WRONG_KEY: the authorized key's architecture)
    seed: int

    @property
    def label(self) -> str:
        if self.attack == WRONG_KEY:
            return f"wrong key s{self.seed}"
        return f"{self.arch} s{self.seed} {get_attack(self.attack).label}"


def authorized_vs_hackers(train: ImageDataset, test: ImageDataset, keys: Sequence[NetSpec], recipe: Recipe,
                          hackers: Sequence[Hacker], hacker_recipe: Recipe, progress: bool = True,
                          published: bool = True, jobs: int = 1, cache: CellCache | None = None,
                          executor="local", folder=None) -> dict:
    """Test accuracy of each authorized key and each hacker trained on `train` (published data, or
    the clean source with published=False); `jobs`: trainings at once (learnlock.jobs); `cache`:
    finished trainings are found there; `executor`, `folder`: see `authorized_vs_hackers_many`."""
    return authorized_vs_hackers_many([("", train, published, hackers)], test, keys, recipe, hacker_recipe,
                                      progress, jobs, cache=cache, executor=executor, folder=folder)[0]


def authorized_vs_hackers_many(cases: Sequence[tuple[str, ImageDataset, bool, Sequence[Hacker]]], test: ImageDataset,
                               keys: Sequence[NetSpec], recipe: Recipe, hacker_recipe: Recipe, progress: bool = True,
                               jobs: int = 1, log=lambda message: None, cache: CellCache | None = None,
                               executor="local", folder=None) -> list[dict]:
    """`authorized_vs_hackers` of each case (name, train, published, hackers), as independent trainings:
    every authorized net and every hacker that needs no teacher, then the distilling hackers with
    the trained first key of their case as teacher. "wall_s" sums a case's training seconds (as
    recorded when a cell was trained); "cells" and "reused" count its trainings and those `cache`
    already held (the authorized weights, the hackers' accuracies: a rerun trains only what is missing).
    `executor` slurm (a `learnlock.slurm.Slurm`) trains on a SLURM cluster, its jobs' files in `folder`."""
    first, second = [], []  # (case, what, which) calls of the two rounds
    for i, (_, _, _, hs) in enumerate(cases):
        first += [(i, "authorized", k) for k in range(len(keys))]
        for h in hs:
            distils = h.attack != WRONG_KEY and "teacher" in get_attack(h.attack).needs
            (second if distils else first).append((i, "hacker", h))
    shared = {"cases": [(d, p) for _, d, p, _ in cases], "test": test, "keys": list(keys), "recipe": recipe,
              "hacker_recipe": hacker_recipe, "progress": progress and runs_here(jobs, executor),
              "teachers": bool(second), "cache": cache}
    done: dict[tuple, tuple] = {}

    def note(calls):
        def on_done(j, result):
            i, what, which = calls[j][:3]
            name = f"{keys[which].arch} (authorized)" if what == "authorized" else which.label
            log(f"{cases[i][0]}: {name} {100 * result[0]:.1f}% ({result[1]} s{', cached' if result[3] else ''})")
        return on_done

    with Workers(jobs, shared, executor, folder) as pool:
        for call, result in zip(first, pool.map(_train_cell, first, note(first))):
            done[call] = result
        second = [(i, "hacker", h, done[(i, "authorized", 0)][2]) for i, _, h in second]
        for call, result in zip(second, pool.map(_train_cell, second, note(second))):
            done[call[:3]] = result
    out = []
    for i, (_, _, _, hs) in enumerate(cases):
        auth = [done[(i, "authorized", k)] for k in range(len(keys))]
        hack = {h.label: done[(i, "hacker", h)] for h in hs}
        every = [*auth, *hack.values()]
        out.append({"authorized": statistics.fmean(a[0] for a in auth), "authorized_each": [a[0] for a in auth],
                    "hackers": {label: r[0] for label, r in hack.items()},
                    "wall_s": round(sum(r[1] for r in every), 1), "cells": len(every),
                    "reused": sum(r[3] for r in every)})
    return out


def _train_cell(shared: dict, i: int, what: str, which, teacher=None) -> tuple:
    """(test accuracy, training seconds, the model when later cells distil it, whether `cache` held
    the cell) of one training of case i."""
    train, published = shared["cases"][i]
    cache: CellCache | None = shared["cache"]
    hits = cache.hits if cache is not None else 0
    if what == "authorized":
        model, cell = authorized_cell(train, shared["test"], shared["keys"][which], shared["recipe"], cache,
                                      shared["progress"], published)
        keep = which == 0 and shared["teachers"]
        return cell["accuracy"], cell["wall_s"], model if keep else None, cell["reused"]
    if which.attack == WRONG_KEY:  # the authorized path with a guessed key: its recipe, its prepare
        spec = wrong_key(shared["keys"][0], which.seed)
        _, cell = authorized_cell(train, shared["test"], spec, replace(shared["recipe"], seed=which.seed), cache,
                                  shared["progress"], published)
        return cell["accuracy"], cell["wall_s"], None, cell["reused"]
    cell = hacker_cell(cache, which.attack, train, shared["test"], which.arch, which.seed, shared["hacker_recipe"],
                       arrive(teacher), shared["progress"])
    return cell["accuracy"], cell["wall_s"], None, cache is not None and cache.hits > hits


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


@dataclass
class Table1(Result):
    """Authorized vs hackers on one or more published datasets of one source, beside the clean
    source ("Original"); rows: name -> list over evaluation seeds of `authorized_vs_hackers`.
    `save(out)` writes table1.json, table1.md, authorized_vs_hackers.png and grid.png."""

    stem = "table1"

    rows: dict[str, list[dict]]
    num_classes: int
    train_size: int
    test_size: int
    source: str
    key: str                   # "arch fingerprint[:12]"
    recipe: Recipe             # the authorized user's (the manifest's)
    hacker_recipe: Recipe
    grid: tuple = field(default=(), repr=False)   # (clean, published images, labels, classes, title)
    reused: int = 0            # trainings this run found in its cell cache
    cells: int = 0             # trainings of the table (authorized nets and hackers, every row and seed)
    published: list = field(default_factory=list)  # per published row: {"row", "path", "fingerprint", "method"}
    seeds: tuple = (0,)        # evaluation seeds
    plain_arch: str | None = None  # the key's network without its key (a keyed net's base; else its arch)

    def markdown(self) -> str:
        return table1_markdown(self.rows, self.num_classes)

    def key_cost(self) -> dict | None:
        """What the key costs the authorized network on clean data: the plain network of the same
        architecture (a Normal hacker column on the Original row) minus the authorized network, in
        points; None when that column was not measured."""
        col = f"{self.plain_arch} Normal"
        clean = self.rows["Original"]
        if not self.plain_arch or col not in clean[0]["hackers"]:
            return None
        authorized = statistics.fmean(r["authorized"] for r in clean)
        plain = statistics.fmean(r["hackers"][col] for r in clean)
        return {"plain": col, "plain_accuracy": plain, "authorized_accuracy": authorized,
                "points": round(100 * (plain - authorized), 2)}

    def ratios(self) -> dict[str, dict]:
        return ratios(self.rows, self.num_classes)

    def verdict(self) -> dict[str, str]:
        """Per published row, whether it separates the authorized net from every hacker."""
        out = {}
        for name, v in self.ratios().items():
            if name != "Original":
                ok = v["authorized_ratio"] >= AUTHORIZED_MIN and v["worst_hacker_ratio"] <= HACKER_MAX
                out[name] = (f"authorized ratio {v['authorized_ratio']:.2f}, worst hacker ratio "
                             f"{v['worst_hacker_ratio']:.2f} -> " + (
                                 "separates" if ok else f"does NOT separate (target: authorized >= {AUTHORIZED_MIN}, "
                                                        f"every hacker <= {HACKER_MAX})"))
        return out

    def to_dict(self) -> dict:
        return {"rows": self.rows, "ratios": self.ratios(), "test_size": self.test_size,
                "train_size": self.train_size, "num_classes": self.num_classes, "source": self.source,
                "key": self.key, "seeds": list(self.seeds), "recipe": self.recipe.to_dict(),
                "hacker_recipe": self.hacker_recipe.to_dict(), "published": self.published,
                "key_cost": self.key_cost(), **result_provenance()}

    def plot(self, out) -> list[Path]:
        """authorized_vs_hackers.png (mean accuracy per row and column) and grid.png (clean /
        noise / published images of the first published dataset)."""
        out = Path(out)
        cols = ["authorized"] + list(self.rows["Original"][0]["hackers"])
        series = {c: [100 * statistics.fmean(x["authorized"] if c == "authorized" else x["hackers"][c] for x in v)
                      for v in self.rows.values()] for c in cols}
        paths = [grouped_bars(list(self.rows), series, out / "authorized_vs_hackers.png",
                              hline=100 / self.num_classes, title="authorized vs hackers: clean test accuracy")]
        if self.grid:
            clean, published, labels, classes, title = self.grid
            paths.append(image_grid(clean, published, labels, classes, out / "grid.png", title=title))
        return paths



def check_recipes(authorized: Recipe, hackers: Recipe) -> None:
    """Warn, before any training, when the hackers train otherwise than the authorized network:
    its ratios then compare two recipes as well as two kinds of access."""
    a, h = authorized, hackers
    if (a.epochs, a.lr, a.batch_size) != (h.epochs, h.lr, h.batch_size):
        warnings.warn(LearnlockWarning(
            f"the hackers train with another recipe than the authorized network ({h.epochs} vs {a.epochs} epochs, "
            f"lr {h.lr} vs {a.lr}, batch {h.batch_size} vs {a.batch_size}); give the hacker recipe's `epochs` etc. "
            "to match"))


def table1(published: Sequence, authorized, *, test: str | None = None, test_per_class: int | None = None,
           hackers: Sequence[Hacker] = (), seeds: Sequence[int] = (0,), hacker_recipe: Recipe | str = "cpu",
           subset_seed: int = 0, out=None, progress: bool = True, log=lambda message: None, jobs: int = 1,
           cache: CellCache | str | Path | None = None, executor="local") -> Table1:
    """UGE's Table 1 for published dataset folder(s) of one source and their key (a path or a key;
    None: the key shipped in the first folder).

    Each folder is opened by `open_published`'s policy: the clean source is reloaded as the first
    manifest says (the "Original" row; an error when it does not say); the test set is `test` (a
    dataset spec; default the source's test split; `test_per_class` drawn with `subset_seed`). Hacker seeds shift by 10 per
    evaluation seed, so each seed trains other hackers. With `out`, checked before any work, the
    result is saved there (`Table1.save`). `jobs` > 1 runs that many trainings at once (learnlock.jobs)
    with the serial run's results; `executor` slurm (a `learnlock.slurm.Slurm`) trains them on a SLURM
    cluster, its jobs' files in `out`/slurm (learnlock.slurm). `cache` (a folder or a `CellCache`, checked before any work): every
    finished training is kept there at once (learnlock.cells), so a killed table resumes and a
    rerun trains only what is missing; `Table1.reused` counts the trainings found there."""
    if out:
        check_writable(out)
    executor = check_executor(executor)
    if cache is not None and not isinstance(cache, CellCache):
        cache = CellCache(check_cache_dir(cache))
    for h in hackers:  # names first: a typo never waits for the clean source to load
        if h.attack != WRONG_KEY:
            get_attack(h.attack)
            MODELS.get(h.arch)
    if not seeds:
        raise LearnlockError("give at least one evaluation seed")
    if not published:
        raise LearnlockError("give at least one published dataset folder")
    if authorized is None and not (Path(published[0]) / SHIPPED_KEY).exists():
        raise LearnlockError("give the authorized key (`authorized`): table1 trains the authorized network")
    hacker_recipe = get_recipe(hacker_recipe)
    loaded, about = [], []
    for i, d in enumerate(published):  # the first brings the clean source and the test set
        opened = open_published(d, authorized, test=test if i == 0 else False, test_per_class=test_per_class,
                                clean=True if i == 0 else False, subset_seed=subset_seed, log=log)
        if i == 0:
            clean, test_set, key, recipe, src = opened.clean, opened.test, opened.key, opened.key_recipe, opened.source
        else:
            check_same_items(clean, opened.data, str(d))
        authorized = key  # every folder is checked against the same key
        name = opened.manifest["settings"].get("preset") or opened.manifest["method"]
        loaded.append((f"{name} ({Path(d).name})", opened.data))
        about.append({"row": loaded[-1][0], "path": str(d), "fingerprint": opened.fingerprint,
                      "method": opened.manifest["method"]})
    check_recipes(recipe, hacker_recipe)
    order = [(name, ds, seed) for seed in seeds for name, ds in [("Original", clean)] + [(n, d) for n, d in loaded]]
    cases = [(f"{name} seed {seed}", ds, ds is not clean, [replace(h, seed=h.seed + 10 * seed) for h in hackers])
             for name, ds, seed in order]
    rows: dict[str, list[dict]] = {}
    results = authorized_vs_hackers_many(cases, test_set, [key], recipe, hacker_recipe, progress, jobs, log, cache,
                                         executor, Path(out) / "slurm" if out else None)
    counts = [(res.pop("cells"), res.pop("reused")) for res in results]  # of this run, not of the table
    for (name, _, _), case, res in zip(order, cases, results):
        rows.setdefault(name, []).append(without_seeds(res, case[3]))
    trained, reused = sum(c for c, _ in counts), sum(r for _, r in counts)
    if cache is not None:
        log(f"cache {cache.root}: {reused} of {trained} trainings reused, {trained - reused} trained now")
    name, ds = loaded[0]
    result = Table1(rows, clean.num_classes, len(clean), len(test_set), src["spec"], f"{key.arch} {key.fingerprint[:12]}",
                    recipe, hacker_recipe, (clean.images, ds.images, clean.labels, clean.classes, name),
                    reused=reused, cells=trained, published=about, seeds=tuple(seeds),
                    plain_arch=getattr(key, "kwargs", {}).get("base", key.arch) if key.arch == "keyed" else key.arch)
    if out:
        result.save(out)
    return result
