"""One hacker training as a cell of the cell cache (kind "hacker"), shared by the scenarios.

table1's hackers and an audit's `clean`, `retrain` and `distill` rows train the same network on the
same data with the same recipe, so they are one cell: an audit run after table1 (or the other way
round) with the same cache reuses what the other trained. (The audit still keeps its own record of
the row, which points at no training of its own.)

    cell = hacker_cell(cache, "retrain", published, test, "cnn", seed=1, recipe=recipe)
    # {"accuracy": 0.421, "wall_s": 8.3}
"""

from __future__ import annotations

import time
from dataclasses import replace

from torch import nn

from ..attacks import AttackContext, get_attack
from ..cells import CellCache, cell_inputs, must_compute
from ..data import ImageDataset
from ..recipe import Recipe
from ..training import evaluate

# the attacks that table1 trains (its Normal and Distill hackers): an audit row of one of these, at
# its default settings, is table1's cell
SHARED_ATTACKS = ("retrain", "distill")


def hacker_cell(cache: CellCache | None, attack: str, data: ImageDataset, test: ImageDataset, net: str, seed: int,
                recipe: Recipe, teacher: nn.Module | None = None, progress: bool = True) -> dict:
    """{"accuracy", "wall_s"} of `attack` (default settings) training `net` from init seed `seed` on
    `data` as given and scored on the clean `test`; through `cache` when there is one (the teacher
    by its trained weights: a retrained teacher is another cell)."""
    start = time.perf_counter()
    recipe = replace(recipe, seed=seed)
    hacker = get_attack(attack)()

    def compute() -> dict:
        model = hacker.train(data, net, seed, recipe, AttackContext(teacher=teacher, progress=progress), progress)
        return {"accuracy": evaluate(model, test), "wall_s": round(time.perf_counter() - start, 1)}

    if cache is None:
        must_compute()
        return compute()
    return cache.run("hacker", cell_inputs(data=data, test=test, attack=attack, settings=hacker.manifest_settings(),
                                           net=net, seed=seed, recipe=recipe, teacher=teacher), compute)


def shared_attack(row: str, attack, clean_row: str) -> str | None:
    """The table1 attack whose cell an audit row is (`attack`: the row's Attack, None for the clean
    row `clean_row`, which is table1's Original retrain), or None when the row is the audit's own."""
    if row == clean_row:
        return "retrain"
    if row in SHARED_ATTACKS and attack is not None and attack.settings == type(attack.settings)():
        return row
    return None
