"""The authorized user: the one way every scenario and bench script trains a key's network.

    model = train_authorized(published, key, manifest_recipe(manifest))            # unlock (key.prepare), fit
    model, cell = authorized_cell(published, test, key, recipe, cache=CellCache("runs/cells"))
    result = train_published("pub/keyed", "pub/keyed.key.safetensors", test="cifar10")

Published data go through the key first (`key.prepare`: a lock key unlocks them; a NetSpec, a
keyed network included, takes them as they are), then `fit` trains `key.build()`. table1, audit,
federated's server and `learnlock train` call nothing else to train an authorized network.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..cells import CellCache, cell_inputs, must_compute
from ..data import ImageDataset
from ..errors import LearnlockError
from ..models import NetSpec
from ..training import Recipe, evaluate, fit
from .opening import open_published


def train_authorized(train: ImageDataset, key: NetSpec, recipe: Recipe, progress: bool = True,
                     published: bool = True, desc: str | None = None, callbacks: Sequence = (),
                     cache: CellCache | None = None):
    """The authorized user's network trained on `train`: published data go through the key first
    (`key.prepare`: a lock key unlocks them); clean data (published=False, Table 1's Original row)
    are trained on as they are.

    With `cache`, the trained weights are a cell ("authorized": the data, the key, the recipe,
    `published` and the code version): a rerun loads them instead of training (`callbacks` then
    do not run). Returns the trained model (eval mode).

        model = train_authorized(published, load_key("pub.key.safetensors"), manifest_recipe(manifest))
    """
    key.check_fits(train)

    def compute():
        data = key.prepare(train) if published else train
        return fit(key.build(), data, recipe, callbacks=callbacks, progress=progress,
                   desc=desc or f"authorized {key.arch}")

    if cache is None:
        must_compute()
        return compute()
    trained = []

    def weights():
        trained.append(compute())
        return trained[0].state_dict()

    state = cache.run_tensors("authorized", authorized_inputs(train, key, recipe, published), weights)
    if trained:
        return trained[0]
    model = key.build()
    model.load_state_dict(state)
    model.test_flip = recipe.test_flip  # as `fit` marks what it trains
    return model.eval()


def authorized_inputs(train: ImageDataset, key: NetSpec, recipe: Recipe, published: bool = True) -> dict:
    """The cache inputs of `train_authorized`'s cell."""
    return cell_inputs(data=train, key=key, recipe=recipe, published=published)


def authorized_cell(train: ImageDataset, test: ImageDataset, key: NetSpec, recipe: Recipe,
                    cache: CellCache | None = None, progress: bool = True, published: bool = True):
    """`train_authorized` (through `cache` when given) and its test accuracy: (model, {"accuracy",
    "wall_s", "reused"}). With a cache, "wall_s" is the training seconds its record holds, so a
    rerun reports what the training took, not the load; "reused" says the cache held the weights."""
    start = time.perf_counter()
    hits = cache.hits if cache is not None else 0
    model = train_authorized(train, key, recipe, progress, published, cache=cache)
    wall = round(time.perf_counter() - start, 1)
    record = cache.record("authorized", authorized_inputs(train, key, recipe, published)) if cache else None
    return model, {"accuracy": evaluate(model, test), "wall_s": record["wall_time_s"] if record else wall,
                   "reused": cache is not None and cache.hits > hits}


def train_published(published_dir, authorized=None, *, test: str | None = None, test_per_class: int | None = None,
                    subset_seed: int = 0, out=None, progress: bool = True, log=lambda message: None) -> dict:
    """What the authorized user does: train the key's network (`authorized`: a key file or key;
    None: the key shipped in the folder) on a published folder with the manifest's recipe; with
    `out`, save the trained weights (NetSpec); with `test` (a dataset spec), report clean test
    accuracy. The folder is opened by `open_published`'s policy. Returns {"model", "key",
    "accuracy", "test", "test_size"}."""
    if not test and not out:
        raise LearnlockError("give `test` to report test accuracy or `out` to save the trained weights (or both)")
    if out and (Path(out).exists() or Path(out).is_symlink()):  # the weights are written after the training
        raise LearnlockError(f"{out} exists; the trained weights never replace a file; choose another `out` "
                             "(or delete it)")
    opened = open_published(published_dir, authorized, test=test or False, test_per_class=test_per_class,
                            clean=False, subset_seed=subset_seed, out=out, log=log)
    key, recipe, test_set = opened.key, opened.key_recipe, opened.test
    if key is None:
        raise LearnlockError("give the authorized key (`authorized`): only its holder trains on these data")
    log(f"training {key.arch} ({key.fingerprint[:12]}) on {len(opened.data)} published images with the manifest's "
        f"recipe ({recipe.epochs} epochs, seed {recipe.seed})")
    model = train_authorized(opened.data, key, recipe, progress, desc="authorized")
    if out:
        NetSpec.from_model(key.arch, model, key.num_classes, key.in_channels, key.kwargs).save(out)
    return {"model": model, "key": key, "accuracy": evaluate(model, test_set) if test_set else None,
            "test": test_set.source if test_set else None, "test_size": len(test_set) if test_set else 0}


__all__ = ["authorized_cell", "authorized_inputs", "train_authorized", "train_published"]
