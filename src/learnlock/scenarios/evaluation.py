"""Evaluation harness: train each (network, init seed) on a training set, test on a test set.

    rows = evaluate_nets(train, test, nets=["cnn", "resnet18"], seeds=[0, 1], recipe="cpu",
                         out_dir="runs/clean")
    print(results_table(rows))

Seed s sets both the network's initial weights and the data order / augmentation draws, so the
spread over seeds covers both sources of run-to-run noise. Every finished cell is kept at once in
the cell cache (learnlock.cells; default OUT/cells with `out_dir`) and a rerun finds it (a killed
run resumes). With `jobs` > 1 the cells train in worker processes (see learnlock.jobs), with
`executor` slurm as the jobs of a SLURM cluster (learnlock.slurm), each caching its row as it
finishes; results.json holds the same rows in the same order as a serial run.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..cells import CellCache, cell_inputs, check_cache_dir, must_compute
from ..data import ImageDataset
from ..data.base import check_test_set
from ..data.outdir import check_writable
from ..errors import LearnlockError
from ..files import atomic_write_json
from ..jobs import Workers, check_executor, runs_here
from ..models import MODELS, NetSpec, create_model
from ..provenance import provenance
from ..recipe import Recipe, get_recipe
from ..report import markdown_table, mean_std
from ..training import Callback, Loss, cross_entropy, evaluate, fit


def describe(data: ImageDataset) -> dict:
    return {"source": data.source, "size": len(data), "classes": list(data.classes),
            "shape": list(data.images.shape[1:])}


def train_one(train: ImageDataset, test: ImageDataset, net: str | NetSpec, seed: int,
              recipe: Recipe, loss: Loss = cross_entropy, callbacks: Sequence[Callback] = (),
              progress: bool = True) -> tuple[dict, object]:
    """Train one network and test it; returns (result row, trained model).

    `net` is an architecture name (initialised from `seed`) or a NetSpec (its own fixed
    initial weights; `seed` then sets only the data order)."""
    if isinstance(net, NetSpec):
        net.check_fits(train, "network")
        model, name = net.build(), f"{net.arch}@{net.fingerprint[:8]}"
    else:
        model = create_model(net, train.num_classes, train.in_channels, seed=seed)
        name = net
    run_recipe = replace(recipe, seed=seed)
    start = time.perf_counter()
    fit(model, train, run_recipe, callbacks=callbacks, loss=loss, progress=progress,
        desc=f"{name} seed {seed}")
    wall = time.perf_counter() - start
    acc = evaluate(model, test)
    return {"net": name, "seed": seed, "accuracy": acc, "wall_time_s": round(wall, 2)}, model


def check_cheap(nets: Sequence[str | NetSpec], seeds: Sequence[int], recipe: Recipe | str = "cpu",
                out_dir=None) -> Recipe:
    """What `evaluate_nets` can refuse without data (network names, seeds, recipe, `out_dir`); the
    resolved recipe."""
    recipe = get_recipe(recipe)
    if out_dir:
        check_writable(out_dir)
    if not nets or not seeds:
        raise LearnlockError("give at least one network and one seed")
    for net in nets:
        if not isinstance(net, NetSpec):
            MODELS.get(net)
    return recipe


def evaluate_specs(train: str, test: str | None, nets: Sequence[str | NetSpec], seeds: Sequence[int],
                   recipe: Recipe | str = "cpu", *, per_class: int | None = None, test_per_class: int | None = None,
                   subset_seed: int = 0, log=lambda message: None, **kwargs) -> list[dict]:
    """`evaluate_nets` from dataset specs (the test split of `train` when `test` is None): every
    argument is checked before a dataset is loaded (or downloaded). Other arguments go to
    `evaluate_nets`."""
    from ..data import load_dataset
    from ..device import current_device

    recipe = check_cheap(nets, seeds, recipe, kwargs.get("out_dir"))
    check_executor(kwargs.get("executor", "local"))
    if kwargs.get("cache") is not None and not isinstance(kwargs["cache"], CellCache):
        kwargs["cache"] = CellCache(check_cache_dir(kwargs["cache"]))
    train_set = load_dataset(train, "train", per_class=per_class, seed=subset_seed)
    test_set = load_dataset(test or train, "test", per_class=test_per_class, seed=subset_seed)
    log(f"train: {train_set.source} ({len(train_set)} images), test: {test_set.source} ({len(test_set)} images), "
        f"recipe {recipe.name}: {recipe.epochs} epochs on {current_device()}")
    return evaluate_nets(train_set, test_set, nets, seeds, recipe, **kwargs)


def evaluate_nets(train: ImageDataset, test: ImageDataset, nets: Sequence[str | NetSpec],
                  seeds: Sequence[int], recipe: Recipe | str = "cpu",
                  out_dir: str | Path | None = None, progress: bool = True, jobs: int = 1,
                  cache: CellCache | str | Path | None = None, executor="local") -> list[dict]:
    """Train and test every (net, seed); returns one row per cell (see `train_one`): the rows a
    previous run left in `out_dir`/results.json first (this run's value where it trained the same
    cell), then this run's other cells in the order of nets and seeds. `jobs`: cells at once;
    `executor`: local, or slurm (a `learnlock.slurm.Slurm`; jobs in `out_dir`/slurm).
    `cache` (a folder or a `CellCache`; default `out_dir`/cells, none without `out_dir`): each cell is
    kept there at once and found again by any run with the same data, recipe and code (learnlock.cells);
    a killed run resumes from it. results.json is written when the cells are done."""
    recipe = check_cheap(nets, seeds, recipe, out_dir)
    executor = check_executor(executor)
    if cache is not None and not isinstance(cache, CellCache):
        cache = CellCache(check_cache_dir(cache))
    elif cache is None and out_dir:
        cache = CellCache(Path(out_dir) / "cells")
    check_test_set(train, test)
    header = {"recipe": recipe.to_dict(), "train": describe(train), "test": describe(test)}
    old: list[dict] = []
    path = Path(out_dir) / "results.json" if out_dir else None
    if path and path.exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise LearnlockError(f"{path} is not valid JSON; move it away to start afresh") from None
        if {k: saved.get(k) for k in header} != header:
            raise LearnlockError(
                f"{path} holds results of a different run (recipe or data differ); "
                "choose another `out` folder"
            )
        old = saved.get("rows", [])
    cells = [(net, seed) for net in nets for seed in seeds]
    shared = (train, test, recipe, progress and runs_here(jobs, executor), cache)
    with Workers(jobs, shared, executor, Path(out_dir) / "slurm" if out_dir else None) as pool:
        new = {(row["net"], row["seed"]): row for row in pool.map(_cell, cells)}
    rows = [new.pop((r["net"], r["seed"]), r) for r in old] + list(new.values())
    if path:  # the rows in a fixed order, whatever order the workers finished in
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**header, **provenance(), "rows": rows})
    return rows


def _cell(shared, net, seed) -> dict:
    """One (net, seed), through the cell cache when there is one (in a worker with `jobs`)."""
    train, test, recipe, progress, cache = shared
    if cache is None:
        must_compute()
        return train_one(train, test, net, seed, recipe, progress=progress)[0]
    inputs = cell_inputs(data=train, test=test, net=net, seed=seed, recipe=replace(recipe, seed=seed))
    return cache.run("evaluate", inputs, lambda: train_one(train, test, net, seed, recipe, progress=progress)[0])


def results_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per net, test accuracy (%) mean +- std over seeds."""
    by_net: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_net[r["net"]].append(r)
    body = []
    for net, rs in by_net.items():
        accs = [r["accuracy"] for r in rs]
        body.append([
            net, mean_std(accs), len(rs),
            ", ".join(f"{100 * a:.1f}" for a in accs),
            f"{sum(r['wall_time_s'] for r in rs) / len(rs):.0f}",
        ])
    return markdown_table(["net", "test acc % (mean ± std)", "seeds", "per seed", "train s / run"], body)
