"""UGE in federated learning (Ye & Wang, CVPR 2024, supplementary Table 9).

The server sends one global network (a NetSpec key: architecture + initial weights) to every
client. Each client protects only its own shard against that key, with no data exchange, and
publishes it. The server trains the global network on the union of the published shards; a
hacker who collects the same shards trains its own network on them (Normal) or distils the
trained global network (Distill).

    shards = split_shards(train.labels, 10, clients=2, split="classes")
    result = federate(train, test, NetSpec.create("cnn", 10, 3, seed=7), shards, "runs/fed",
                      recipe=RECIPES["cpu"], preset="paper")
    print(result.markdown())

Rows of the report (test accuracy on the first-half classes, the second-half classes, all):
  Joint          the global key trained on the union of the clean shards (no protection)
  Separate-k     the global key trained on client k's clean shard only
  Server-k       the global key trained on client k's published shard only
  Global         the global key trained on the union of the published shards (the server)
  Normal / Distill  hacker networks on the union of the published shards

Every client's shard is kept in the output folder and every trained cell in the cell cache
(learnlock.cells; default OUT/cells), so a killed run resumes; a changed setting is refused for a
shard and recomputed for a cell.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..cells import CellCache, cell_inputs, check_cache_dir, must_compute
from ..data import ImageDataset
from ..data.manifest import verify
from ..data.published import load_published, published_fingerprint
from ..errors import LearnlockError
from ..files import atomic_write_json
from ..jobs import Workers, check_executor, runs_here
from ..models import NetSpec
from ..provenance import result_provenance
from ..training import Recipe, predict
from .authorized import train_authorized
from .shards import SPLITS, concat, group_accuracy, parse_split, split_shards  # noqa: F401 (federated's API)
from .table1 import Hacker
from .table9 import FederatedResult, table9_markdown  # noqa: F401 (federated's API)

class Federation:
    """One federated run in `out`: the shards, the clients' published data, the trained cells.
    `make_protection(key, client)` returns the protection client `client` applies."""

    def __init__(self, train: ImageDataset, test: ImageDataset, key: NetSpec, shards: Sequence[torch.Tensor],
                 out, recipe: Recipe, make_protection, hackers: Sequence[Hacker] = (Hacker("retrain", "cnn", 1),
                                                                                   Hacker("distill", "cnn", 1)),
                 hacker_recipe: Recipe | None = None, split: str = "", progress: bool = True,
                 cache: CellCache | None = None):
        key.check_fits(train, "the global network")
        if test.classes != train.classes:
            raise LearnlockError(f"test set {test.source} has other classes than {train.source}")
        seen = torch.cat(list(shards)) if shards else torch.empty(0, dtype=torch.long)
        if len(seen) != len(train) or not torch.equal(seen.sort().values, torch.arange(len(train))):
            raise LearnlockError("the shards must be a partition of the training set (every item in exactly one)")
        self.train, self.test, self.key, self.out = train, test, key, Path(out)
        self.test_fingerprint = test.fingerprint()  # part of every cell's ident
        self.shards = [s.sort().values for s in shards]
        self.recipe, self.hacker_recipe = recipe, hacker_recipe or recipe
        self.make_protection, self.hackers, self.split, self.progress = make_protection, list(hackers), split, progress
        self.cache = cache if cache is not None else CellCache(self.out / "cells")  # the trained cells

    # ---- clients ---------------------------------------------------------------------------
    def client_dir(self, k: int) -> Path:
        return self.out / f"client_{k}"

    def key_file(self, k: int) -> Path:
        return self.out / f"client_{k}.key.safetensors"

    def publish(self, k: int) -> tuple[ImageDataset, dict, object]:
        """Client k protects its own shard against the global key (cached in client_k/); returns
        (published shard, manifest, the key it issued or None). A protection that needs a key
        issues the network the server must train (keyed: key layer + base; lock: a LockKey that
        unlocks the shard); the server keeps it as client_k.key.safetensors."""
        shard = self.train.subset(self.shards[k])
        prot = self.make_protection(self.key, k)
        path = self.client_dir(k)
        want = json.loads(json.dumps(prot.manifest_settings(), default=str))
        if (path / "manifest.json").exists():
            data, manifest = load_published(path)
            issued = self.kept_key(prot, shard, k)
            auth = manifest.get("authorized") or {}
            names = [n["fingerprint"] for n in auth.get("networks", [])]
            made_from = (manifest.get("extra") or {}).get("federated", {}).get("source")
            if (manifest["method"] != prot.name or manifest["settings"] != want or data.ids != shard.ids
                    or names != ([issued.fingerprint] if issued is not None else [])
                    or (issued is not None and auth.get("recipe") != prot.recipe.to_dict())
                    or made_from != shard.fingerprint()):
                raise LearnlockError(f"{path} holds client {k}'s data from another configuration (method, "
                                     "settings, key, split or source pixels); use another `out`")
            if issued is not None:  # the issued key authenticates what the server receives
                verify(manifest, issued, path / "manifest.json")
            return data, manifest, issued
        must_compute(f"client {k}'s shard")
        start = time.perf_counter()
        prot.protect(shard, path, workdir=self.out / f".client_{k}.work",
                     extra={"federated": {"client": k, "clients": len(self.shards), "split": self.split,
                                          "source": shard.fingerprint()}})
        issued = prot.issued_keys(shard)[0] if prot.needs_key else None  # final now (lock trained its key)
        if issued is not None:
            issued.save(self.key_file(k), overwrite=True, private=True)
        atomic_write_json(self.out / "cells" / f"protect_client_{k}.json",
                          {"wall_s": round(time.perf_counter() - start, 1), "images": len(shard)})
        shutil.rmtree(self.out / f".client_{k}.work", ignore_errors=True)
        data, manifest = load_published(path)  # read back: what the server receives is what was verified
        return data, manifest, issued

    def kept_key(self, prot, shard: ImageDataset, k: int):
        """The key client k issued for its published shard (None for a protection without a key):
        the file the server kept, or one the protection derives again without training."""
        from ..keys import load_key

        if not prot.needs_key:
            return None
        if self.key_file(k).exists():
            return load_key(self.key_file(k))
        if prot.trains_key:  # made while protecting (lock): only the kept file has it
            raise LearnlockError(f"{self.key_file(k)} is missing: client {k}'s key cannot be made again without "
                                 f"protecting again; delete {self.client_dir(k)} to protect it afresh, or use "
                                 "another `out`")
        return prot.issued_keys(shard)[0]

    def protect_wall(self, k: int) -> float | None:
        path = self.out / "cells" / f"protect_client_{k}.json"
        return json.loads(path.read_text())["wall_s"] if path.exists() else None

    # ---- training cells --------------------------------------------------------------------
    def cell(self, name: str, data: ImageDataset, what: tuple, ident: dict) -> tuple[dict, torch.nn.Module | None]:
        """Train as `what` says (`train_cell`) unless the cell cache holds this cell (its name, data,
        test set and `ident`); returns the accuracies (and the model when it was trained now)."""
        trained = []

        def compute() -> dict:
            start = time.perf_counter()
            trained.append(self.train_cell(data, what))
            acc = group_accuracy(predict(trained[0], self.test), self.test.labels, self.test.num_classes)
            return {"name": name, "train_size": len(data), **acc, "wall_s": round(time.perf_counter() - start, 1)}

        res = self.cache.run("federated", self.cell_inputs(name, data, ident), compute)
        return res, trained[0] if trained else None

    def cell_inputs(self, name: str, data: ImageDataset, ident: dict) -> dict:
        return {**ident, "name": name, "data": data.fingerprint(), "test": self.test_fingerprint}

    def train_cell(self, data: ImageDataset, what: tuple):
        """("key", desc, key, published): the server's network of `key` trained on `data` the way the
        authorized user trains (`train_authorized`: published data go through the key first);
        ("hacker", Hacker, teacher weights or None): a hacker network."""
        from ..attacks import AttackContext, get_attack

        if what[0] == "key":
            _, desc, key, published = what
            return train_authorized(data, key, self.recipe, self.progress, published, desc=desc)
        _, h, weights = what
        teacher = NetSpec.load(weights).build() if weights else None
        context = AttackContext(teacher=teacher, progress=self.progress)
        return get_attack(h.attack)().train(data, h.arch, h.seed, self.hacker_recipe, context, self.progress)

    def run(self, jobs: int = 1, executor="local") -> FederatedResult:
        """Every client's shard, then every cell; `jobs` > 1 runs that many at once in worker
        processes (learnlock.jobs; `make_protection` must then be picklable, e.g. a partial of a
        module-level function), `executor` slurm as the jobs of a SLURM cluster (their files in
        `out`/slurm), with the serial run's files and result."""
        executor = check_executor(executor)
        self.out.mkdir(parents=True, exist_ok=True)
        split_file = self.out / "split.json"
        split = {"split": self.split, "clients": [[self.train.ids[i] for i in s.tolist()] for s in self.shards]}
        if split_file.exists() and json.loads(split_file.read_text()) != split:
            raise LearnlockError(f"{split_file} records another split of the data; use another `out`")
        atomic_write_json(split_file, split)
        if not runs_here(jobs, executor):
            self.progress = False  # bars of several processes would garble each other
        with Workers(jobs, self, executor, self.out / "slurm") as pool:
            published = pool.map(Federation.publish, [(k,) for k in range(len(self.shards))])
            clean_parts = [self.train.subset(s) for s in self.shards]
            rows = self.train_cells(pool, published, clean_parts)
        probe = client_probe(clean_parts, [d for d, *_ in published])
        result = {"split": self.split, "clients": len(self.shards), "shard_sizes": [len(s) for s in self.shards],
                  "shard_classes": [sorted(set(self.train.labels[s].tolist())) for s in self.shards],
                  "train_size": len(self.train), "test_size": len(self.test), "num_classes": self.train.num_classes,
                  "global": {"arch": self.key.arch, "fingerprint": self.key.fingerprint},
                  "method": published[0][1]["method"], "settings": published[0][1]["settings"],
                  "issued": [k.fingerprint if k is not None else None for _, _, k in published],
                  "recipe": self.recipe.to_dict(), "hacker_recipe": self.hacker_recipe.to_dict(),
                  "client_probe_acc": probe, "client_probe_chance": max(len(s) for s in self.shards) / len(self.train),
                  "protect_wall_s": [self.protect_wall(k) for k in range(len(self.shards))],
                  "rows": {n: {c: r.get(c) for c in ("first", "second", "all", "train_size", "wall_s")} for n, r in rows.items()},
                  "published": [{"client": k, "path": self.client_dir(k).name, "fingerprint": published_fingerprint(m)}
                                for k, (_, m, _) in enumerate(published)],
                  **result_provenance()}
        result = FederatedResult(result)
        result.save(self.out)
        return result

    def train_cells(self, pool: Workers, published, clean_parts) -> dict:
        """Joint, Separate-k, Server-k, Global and the hackers that need no teacher at once; then
        the distilling hackers, taught by the trained Global network. Rows in the report's order."""
        from ..attacks import get_attack

        union = concat([d for d, *_ in published], source="federated union")
        # the network the server trains: the key each client issued (keyed: key layer + base; lock:
        # a LockKey, unlocking that client's shard), or the global key for a protection without one
        keys = [k if k is not None else self.key for *_, k in published]
        ours = keys[0]
        if len({k.fingerprint for k in keys}) == 1:
            global_data, global_what = union, ("key", "global", ours, True)
        else:  # each client locked its shard with its own key: unlock each, then train on the union
            global_data = concat([k.prepare(d) for (d, *_), k in zip(published, keys)], source="federated union")
            global_what = ("key", "global", ours, False)
        base = {"key": self.key.fingerprint, "issued": [k.fingerprint for k in keys], **cell_inputs(recipe=self.recipe)}
        weights = self.out / "global.safetensors"  # the distillation teacher
        if not weights.exists():  # train Global again to have it
            self.cache.path("federated", self.cell_inputs("Global", global_data, base)).unlink(missing_ok=True)
        calls = [("Joint", concat(clean_parts), ("key", "joint", ours, False), base)]
        calls += [(f"Separate-{k + 1}", part, ("key", f"separate {k + 1}", ours, False), base)
                  for k, part in enumerate(clean_parts)]
        calls += [(f"Server-{k + 1}", data, ("key", f"server {k + 1}", key, True), base)
                  for k, ((data, *_), key) in enumerate(zip(published, keys))]
        calls.append(("Global", global_data, global_what, base))
        hackers = [(f"{get_attack(h.attack).label} ({h.arch})", h, "teacher" in get_attack(h.attack).needs,
                    {**base, "hacker": [h.attack, h.arch, h.seed], **cell_inputs(hacker_recipe=self.hacker_recipe)})
                   for h in self.hackers]
        order = [c[0] for c in calls] + [name for name, *_ in hackers]
        calls += [(name, union, ("hacker", h, None), {**ident, "teacher": None})
                  for name, h, taught, ident in hackers if not taught]
        rows = {}
        for (name, *_), (res, model) in zip(calls, pool.map(Federation.cell, calls)):
            rows[name] = res
            if name == "Global" and model is not None:
                NetSpec.from_model(ours.arch, model, ours.num_classes, ours.in_channels,
                                   ours.kwargs).save(weights, overwrite=True)
        calls = [(name, union, ("hacker", h, weights), {**ident, "teacher": _weights_digest(weights)})
                 for name, h, taught, ident in hackers if taught]
        for (name, *_), (res, _) in zip(calls, pool.map(Federation.cell, calls)):
            rows[name] = res
        return {name: rows[name] for name in order}

def client_probe(clean: Sequence[ImageDataset], published: Sequence[ImageDataset], seed: int = 0) -> float | None:
    """Held-out accuracy of a linear probe that tells the client from the perturbation alone
    (published - clean). Near the majority share: the clients' perturbations look alike. High:
    each client's noise has its own signature, which a network trained on the union can use as a
    shortcut to whatever the clients differ in (with a class split: the class half)."""
    from ..diagnostics import linear_probe

    if len(clean) < 2:
        return None
    delta = torch.cat([p.images.float() - c.images.float() for c, p in zip(clean, published)]).flatten(1) / 255
    client = torch.cat([torch.full((len(c),), k) for k, c in enumerate(clean)])
    perm = torch.randperm(len(client), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:len(perm) // 2], perm[len(perm) // 2:]
    return linear_probe(delta[tr], client[tr], delta[te], client[te], len(clean), seed=seed)


def _weights_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def federate(train: ImageDataset, test: ImageDataset, key: NetSpec, shards: Sequence[torch.Tensor], out,
             recipe: Recipe, method: str = "uge", preset: str | None = None, settings: dict | None = None,
             hackers: Sequence[Hacker] = (Hacker("retrain", "cnn", 1), Hacker("distill", "cnn", 1)),
             hacker_recipe: Recipe | None = None, split: str = "", progress: bool = True, jobs: int = 1,
             cache: CellCache | str | Path | None = None, executor="local") -> FederatedResult:
    """Run the federated scenario (see the module docstring); `method` is any registered
    protection, uge by default (its authorized network is the global key). Client k uses the
    protection seed `settings["seed"] + k`. `jobs` > 1: clients protect, then cells train, that
    many at once in worker processes (learnlock.jobs), or with `executor` slurm (a
    `learnlock.slurm.Slurm`) on a SLURM cluster, with the serial run's files and result.
    `cache`: the cell cache of the trained cells (a folder or a `CellCache`; default `out`/cells)."""
    from ..protections import get_protection

    cls = get_protection(method)
    executor = check_executor(executor)
    progress = progress and runs_here(jobs, executor)
    make = functools.partial(_make_protection, cls, dict(settings or {}), preset, recipe, progress)
    make(key)  # validate the settings before any work
    if cache is not None and not isinstance(cache, CellCache):
        cache = CellCache(check_cache_dir(cache))
    hacker_recipe = hacker_recipe or recipe
    return Federation(train, test, key, shards, out, recipe, make, hackers, hacker_recipe, split, progress,
                      cache).run(jobs, executor)


def _make_protection(cls, settings: dict, preset, recipe: Recipe, progress: bool, key: NetSpec, client: int = 0):
    """The protection client `client` applies (a module-level function: workers receive it by name).
    Client c protects with seed + c: clients choose their noise independently, and equal seeds
    would give item i of every client the same random draws."""
    from ..protections import ProtectionContext

    own = {**settings, "seed": settings.get("seed", 0) + client}
    context = ProtectionContext([key] if cls.needs_key else [], recipe, progress=progress)
    return cls(context, preset=preset, **own)


def check_hackers(hackers: Sequence[Hacker]) -> None:
    """Refuse an unknown attack or architecture among `hackers` (before any data are loaded)."""
    from ..attacks import get_attack
    from ..models import MODELS

    for h in hackers:
        get_attack(h.attack)
        MODELS.get(h.arch)


def run_federated(data: str, out, *, global_arch: str, global_seed: int | None = None,
                  global_secret: str | None = None, test: str | None = None, per_class: int | None = None,
                  test_per_class: int | None = None, subset_seed: int = 0, clients: int = 2, split: str = "classes",
                  split_seed: int = 0, log=lambda message: None, **kwargs) -> FederatedResult:
    """`federate` from dataset specs: load and split the data, resolve the global key (an
    architecture with a seed or secret, or a key file), check `out` (a fresh folder, or a run to
    resume), run, and save a derived global key as out/global.key.safetensors (the server keeps it).
    Other arguments go to `federate`; the result holds `key`, `key_path` and `source` too."""
    from ..data import load_dataset
    from ..data.base import check_test_set
    from ..data.published import check_out_dir
    from ..keys import resolve_key

    from ..keys import check_key_specs
    from ..protections import get_protection

    # everything that needs no data first: a bad name or setting never waits for a download
    cls = get_protection(kwargs.get("method", "uge"))
    cls.resolve_settings(None, kwargs.get("preset"), **(kwargs.get("settings") or {}))
    check_key_specs([global_arch], key_seed=global_seed, key_secret=global_secret)
    parse_split(split)
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise LearnlockError(f"`clients` must be a positive count, got {clients!r}")
    check_hackers(kwargs.get("hackers", ()))
    check_executor(kwargs.get("executor", "local"))
    out = Path(out)
    if not (out / "split.json").exists():  # a fresh run (a folder with split.json resumes)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LearnlockError(f"{out} exists and is not a federated run folder; choose a new `out`")
        check_out_dir(out, overwrite=True, source=data)  # writable, and not inside the source data
    train = load_dataset(data, "train", per_class=per_class, seed=subset_seed)
    test_set = load_dataset(test or data, "test", per_class=test_per_class, seed=subset_seed)
    check_test_set(train, test_set)
    derivation = None
    if global_secret is not None:  # scrypt with a salt of this run, kept beside it (public, like the manifest's)
        from ..keys import new_derivation

        kept = out / "global.key-derivation.json"
        derivation = json.loads(kept.read_text()) if kept.exists() else new_derivation()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(kept, derivation)
    key = resolve_key(global_arch, train.num_classes, train.in_channels, global_seed, global_secret, derivation)
    shards = split_shards(train.labels, train.num_classes, clients, split, split_seed)
    log(f"{clients} clients ({split}): " + ", ".join(f"client {k + 1} {len(s)} images" for k, s in enumerate(shards))
        + f"; global {key.arch} {key.fingerprint[:12]}; test {len(test_set)} clean images")
    result = federate(train, test_set, key, shards, out, split=split, **kwargs)
    key_path = None
    if not Path(global_arch).exists():
        key_path = out / "global.key.safetensors"
        if not key_path.exists():
            key.save(key_path, private=True)
    return replace(result, key=key, key_path=key_path, source=train.source)
