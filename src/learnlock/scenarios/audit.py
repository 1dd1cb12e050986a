"""`audit`: a scoreboard of one published dataset against every attack.

    result = audit(published, test, out_dir="runs/audit", attacks=["retrain", "iss-jpeg"],
                   nets=["cnn", "resnet18"], seeds=[0, 1], recipe=RECIPES["cpu"], clean=clean, aux=aux)
    print(result.markdown())   # the table, and the aux attacks against the aux-only baseline

Rows: the clean baseline (each net trained on the unprotected source), the authorized network
(when the published dataset names its key and the key is given), then each attack. Columns: the
hacker nets. Cells: clean test accuracy, mean ± std over seeds, and the learnability ratio
(acc - chance) / (clean acc - chance) against the clean baseline of the same net.

Every finished cell is written at once to the cell cache (learnlock.cells; default OUT/cells),
under a hash of what produced it (attack and settings, net, seed, recipe, fingerprints of the
data) and of the code version; the authorized network's weights too (`train_authorized`). A rerun
skips every cell it finds, so a killed audit resumes where it stopped, and a changed setting or
code trains again.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Sequence

from ..attacks import Attack, AttackContext, create_attack, list_attacks
from ..cells import CellCache, cell_inputs, check_cache_dir
from ..data import FIXED_SPLITS, ImageDataset, load_dataset
from ..data.published import check_writable
from ..errors import LearnlockError
from ..jobs import Workers, arrive, check_executor, runs_here, to_cpu
from ..models import MODELS, NetSpec, create_model
from ..provenance import result_provenance
from ..recipe import Recipe
from ..report import learnability_ratio, markdown_table
from ..report.plots import recovery_plot
from ..report.result import RecordResult
from ..training import evaluate, fit
from .authorized import authorized_cell
from .hackers import hacker_cell, shared_attack
from .opening import open_published

CLEAN, AUTHORIZED, AUX_ONLY = "clean", "authorized", "aux-only"
# an attack that reads clean aux data wins only where it beats the same net trained on those aux
# images alone by more than this (in learnability ratio)
AUX_MARGIN = 0.1


def _jsonable(x):
    if is_dataclass(x):
        x = asdict(x)
    return json.loads(json.dumps(x, default=list))


def attack_names(names: str | Sequence[str]) -> list[str]:
    """'all' -> every registered attack, else the given names (a comma-separated string or a list)."""
    if isinstance(names, str):
        return list_attacks() if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    return list(names)


def check_cheap(attacks: str | Sequence[str], nets: Sequence[str], settings: dict[str, dict] | None = None) -> None:
    """What an audit refuses before any data are loaded: no attack, an unknown attack or net, a
    setting an attack does not have or that names an attack not in the audit."""
    names = attack_names(attacks)
    if not names:
        raise LearnlockError(f"`attacks` names no attack ({attacks!r}); give all, or comma-separated names "
                             f"from: {', '.join(list_attacks())}")
    if not nets:
        raise LearnlockError("`nets` names no network; give at least one hacker architecture")
    for net in nets:
        MODELS.get(net)
    unknown = sorted(set(settings or {}) - set(names))
    if unknown:
        raise LearnlockError(f"settings given for attacks not in the audit: {', '.join(unknown)}")
    for n in names:
        create_attack(n, **(settings or {}).get(n, {}))


def resolve_attacks(names: str | Sequence[str], has_teacher: bool, has_aux: bool,
                    has_rho: bool = False, has_scheme: bool = False,
                    has_originals: bool = False) -> tuple[list[str], list[str]]:
    """'all' -> every registered attack whose threat-model input is available (the rest are
    returned as skipped, with why); explicit names are all required."""
    explicit = names != "all"
    names = attack_names(names)
    # the owner's clean source stands in for leaked originals of published images (leaked-pairs)
    have = {"teacher": has_teacher, "aux": has_aux, "rho": has_rho, "scheme": has_scheme,
            "originals": has_originals}
    chosen, skipped = [], []
    for n in names:
        missing = [need for need in create_attack(n).needs if not have.get(need, True)]
        if not missing:
            chosen.append(n)
        elif explicit:
            create_attack(n).check_context(AttackContext())  # raises the clear "needs ..." error
        else:
            skipped.append(f"{n} (needs {' and '.join(missing)})")
    return chosen, skipped


def audit(published: ImageDataset, test: ImageDataset, *, out_dir, attacks: str | Sequence[str] = "all",
          nets: Sequence[str] = ("cnn",), seeds: Sequence[int] = (0,), recipe: Recipe,
          clean: ImageDataset | None = None, aux: ImageDataset | None = None,
          key: NetSpec | None = None, key_recipe: Recipe | None = None,
          settings: dict[str, dict] | None = None, scheme: dict | None = None, rho: float | None = None,
          progress: bool = True, log=print, jobs: int = 1, cache: CellCache | str | Path | None = None,
          published_fingerprint: str | None = None, executor="local") -> "AuditResult":
    """Run the clean baseline, the authorized net and every selected attack; write audit.json,
    audit.md and audit.png under `out_dir` (`AuditResult.save`) and return the `AuditResult`.
    `jobs` > 1 trains that many cells at once in worker processes (learnlock.jobs), `executor` slurm
    (a `learnlock.slurm.Slurm`) as the jobs of a SLURM cluster (their files in `out_dir`/slurm); the
    cells and the report are those of the serial run. `cache`: the cell cache (a folder or a `CellCache`;
    default `out_dir`/cells). `published_fingerprint` (the manifest's, `audit_folder` gives it) is
    recorded in audit.json, where `learnlock report` finds it."""
    out = Path(out_dir)
    executor = check_executor(executor)
    serial = runs_here(jobs, executor)
    if not isinstance(cache, CellCache):
        cache = CellCache(check_cache_dir(cache) if cache is not None else out / "cells")
    settings = settings or {}
    if test.num_classes != published.num_classes or test.images.shape[1:] != published.images.shape[1:]:
        raise LearnlockError(
            f"test set {test.source} ({test.num_classes} classes, images {tuple(test.images.shape[1:])}) does not "
            f"match the published data ({published.num_classes} classes, {tuple(published.images.shape[1:])})")
    if clean is not None and (clean.num_classes != published.num_classes
                              or clean.images.shape[1:] != published.images.shape[1:]):
        raise LearnlockError(f"`clean` {clean.source} does not match the published data's classes or image size")
    check_cheap(attacks, nets, settings)
    chosen, skipped = resolve_attacks(attacks, key is not None, aux is not None, rho is not None, scheme is not None,
                                      clean is not None)
    objs: dict[str, Attack] = {n: create_attack(n, **settings.get(n, {})) for n in chosen}
    if aux is not None:  # each attack says what it needs of aux data (`Attack.aux_match`)
        for attack in objs.values() or [Attack()]:
            attack.check_aux(aux, published)

    # the authorized network first (its weights cached): distill's teacher, part of distill's cells
    teacher = None
    if key is not None:
        teacher, auth = authorized_cell(published, test, key, key_recipe or recipe, cache, progress)
        auth_cell = {"row": AUTHORIZED, "net": key.arch, "seed": None, "accuracy": auth["accuracy"],
                     "wall_s": auth["wall_s"]}
        if clean is not None:  # the key's own clean baseline (table1's Original row: the same cached cell)
            _, auth_clean = authorized_cell(clean, test, key, key_recipe or recipe, cache, progress, published=False)
            auth_cell["clean_accuracy"] = auth_clean["accuracy"]
        log(f"authorized {key.arch} {key.fingerprint[:12]}: {100 * auth_cell['accuracy']:.1f}%")
    # only the cells that read the aux set depend on it: an aux sweep (one audit per aux size)
    # reuses every other cell from the cache
    base_config = cell_inputs(recipe=recipe, published=published, test=test, aux=None)
    aux_config = {**base_config, **cell_inputs(aux=aux)} if aux is not None else base_config
    specs: list[tuple[str, str, int, dict]] = []  # (row, net, seed, config) of every cell, in table order
    if clean is not None:
        clean_config = {**base_config, "clean": clean.fingerprint()}
        specs += [(CLEAN, net, seed, clean_config) for net in nets for seed in seeds]
    aux_attacks = [name for name, attack in objs.items() if aux is not None and attack.uses_aux()]
    if aux_attacks:  # what the aux images alone are worth: the baseline every aux attack must beat
        specs += [(AUX_ONLY, net, seed, {**aux_config, "aux_only": True}) for net in nets for seed in seeds]
    for name, attack in objs.items():
        config = {**(aux_config if name in aux_attacks else base_config), "attack": name,
                  "settings": _jsonable(attack.settings)}
        if "teacher" in attack.needs:  # the trained weights: a retrained teacher is other cells
            config["teacher"] = cell_inputs(teacher=teacher)["teacher"]
        if "originals" in attack.needs:  # the leaked originals are the clean source's items
            config["originals"] = clean.fingerprint()
        specs += [(name, net, seed, config) for net in nets for seed in seeds]

    cached = [cache.get("audit", cell_config(*spec)) for spec in specs]
    for (row, net, seed, _), cell in zip(specs, cached):
        if cell is not None:
            log(f"{row} {net} seed {seed}: {100 * cell['accuracy']:.1f}% (cached)")

    # What every cell shares is computed once, here, before the cells fan out (`jobs`): the
    # authorized network (above) and each attack's transform of the published data (purify's
    # DDPM), only for attacks with a cell to compute.
    # one work folder: attacks that share a trained model (a DDPM) find it by its own cache key
    context = AttackContext(teacher=teacher, aux=aux, workdir=out / "work", scheme=scheme, rho=rho,
                            originals=clean, progress=progress)
    extras: dict[str, dict] = {}
    data: dict[str, ImageDataset] = {}
    for name in dict.fromkeys(row for (row, *_), cell in zip(specs, cached)
                              if cell is None and row not in (CLEAN, AUX_ONLY)):
        data[name] = objs[name].transform(published, context)
        report = objs[name].report()
        if report:
            extras[name] = report
    todo = [i for i, cell in enumerate(cached) if cell is None]
    shared = {"clean": clean, "published": published, "aux": aux, "test": test, "recipe": recipe, "attacks": objs, "data": data, "cache": cache,
              "context": replace(context, teacher=teacher if serial else to_cpu(teacher),
                                 progress=progress and serial)}

    def done(_, cell: dict) -> None:
        reused = ", another run's training" if cell.get("reused") else ""
        log(f"{cell['row']} {cell['net']} seed {cell['seed']}: {100 * cell['accuracy']:.1f}% ({cell['wall_s']} s{reused})")

    with Workers(jobs, shared, executor, out / "slurm") as pool:
        for i, cell in zip(todo, pool.map(_cell, [specs[i] for i in todo], on_done=done)):
            cached[i] = cell
    results: dict[str, dict[str, list[dict]]] = {}
    for (row, net, _, _), cell in zip(specs, cached):
        if row != CLEAN and key is not None and AUTHORIZED not in results:
            results[AUTHORIZED] = {key.arch: [auth_cell]}
        results.setdefault(row, {}).setdefault(net, []).append(cell)
    if key is not None and AUTHORIZED not in results:
        results[AUTHORIZED] = {key.arch: [auth_cell]}
    about = {"published_fingerprint": published_fingerprint,
             "aux": None if aux is None else {"source": aux.source, "size": len(aux), "attacks": aux_attacks,
                                              "margin": AUX_MARGIN},
             "attacks": {name: _jsonable(attack.settings) for name, attack in objs.items()}}
    return write_report(results, out, published, test, nets, seeds, recipe, skipped, extras, key, about)


def cell_config(row: str, net: str, seed: int, config: dict) -> dict:
    """An audit cell's cache inputs."""
    return {**config, "row": row, "net": net, "seed": seed}


def _cell(shared: dict, row: str, net: str, seed: int, config: dict) -> dict:
    """One audit cell, trained and written to the cell cache at once (in a worker with `jobs`)."""
    def compute() -> dict:
        start = time.perf_counter()
        recipe, test, context = replace(shared["recipe"], seed=seed), shared["test"], shared["context"]
        plain = shared_attack(row, shared["attacks"].get(row), CLEAN)
        if plain is not None:  # table1's training too (scenarios.hackers): one cell for both
            teacher, hits = arrive(context.teacher) if plain == "distill" else None, shared["cache"].hits
            cell = hacker_cell(shared["cache"], plain, shared["clean" if row == CLEAN else "published"], test, net,
                               seed, recipe, teacher, context.progress)
            return {**cell, "row": row, "net": net, "seed": seed, "reused": shared["cache"].hits > hits}
        if row == AUX_ONLY:  # the same net on the aux images with their true labels
            data = shared["aux"]
            model = create_model(net, data.num_classes, data.in_channels, seed=seed)
            fit(model, data, recipe, progress=context.progress, desc=f"{row} {net} seed {seed}")
            cell = {"accuracy": evaluate(model, test)}
        else:
            context = replace(context, teacher=arrive(context.teacher))
            cell = shared["attacks"][row].evaluate(shared["data"][row], test, net, seed, recipe, context,
                                                   context.progress)
        return {**cell, "wall_s": round(time.perf_counter() - start, 1), "row": row, "net": net, "seed": seed}

    return shared["cache"].run("audit", cell_config(row, net, seed, config), compute)


def write_report(results, out: Path, published, test, nets, seeds, recipe, skipped, extras, key,
                 about: dict | None = None) -> "AuditResult":
    k = published.num_classes
    clean_mean = {net: statistics.fmean(c["accuracy"] for c in results[CLEAN][net])
                  for net in results.get(CLEAN, {})}
    rows, summary = [], {}
    for row, by_net in results.items():
        label = f"authorized ({key.arch} {key.fingerprint[:8]})" if row == AUTHORIZED else row
        cells_md, summary[row] = [label], {}
        # the authorized net has one architecture: show it in its column, or in the first one
        shown = {nets[0] if key.arch not in nets else key.arch: key.arch} if row == AUTHORIZED else {n: n for n in nets}
        for net in nets:
            vals = [c["accuracy"] for c in by_net.get(shown.get(net, ""), [])]
            if not vals:
                cells_md.append("-")
                continue
            arch = shown[net]
            m = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            # the authorized row against the key network on clean data (its key cost), hackers against clean
            base = by_net[arch][0].get("clean_accuracy") if row == AUTHORIZED else clean_mean.get(arch)
            ratio = learnability_ratio(m, base, k) if base is not None else float("nan")
            summary[row][arch] = {"mean": m, "std": sd, "ratio": ratio, "n": len(vals)}
            where = f" [{arch}]" if arch != net else ""
            cells_md.append(f"{100 * m:.1f} ± {100 * sd:.1f} ({'n/a' if ratio != ratio else f'{ratio:.2f}'}){where}")
        rows.append(cells_md)
    table = markdown_table(["attack"] + list(nets), rows)
    notes = "\n\n".join(n for n in (aux_verdicts(summary, (about or {}).get("aux")), uncalibrated_notes(results)) if n)
    audit_json = {
        "published": published.source, "train_size": len(published), "test": test.source, "test_size": len(test),
        "nets": list(nets), "seeds": list(seeds), "recipe": _jsonable(recipe), "skipped": skipped,
        "summary": summary, "cells": results, "extras": extras, "table": table, "notes": notes, **(about or {}),
        "num_classes": k, "key": None if key is None else {"arch": key.arch, "fingerprint": key.fingerprint},
        **result_provenance(),
    }
    result = AuditResult(audit_json)
    result.save(out)
    return result


class AuditResult(RecordResult):
    """An audit: audit.json's record (result["summary"], ["cells"], ["skipped"], ...); `markdown()`
    is its table; `save(out)` writes audit.json, audit.md, audit.png and, with weight-space
    recovery curves, recovery.png."""

    stem = "audit"

    def markdown(self) -> str:
        notes = self.record.get("notes")
        return self.record["table"] + (f"\n\n{notes}" if notes else "")

    def plot(self, out: Path) -> list[Path]:
        r, chance = self.record, 100.0 / self.record["num_classes"]
        paths = [plot(r["summary"], r["nets"], out / "audit.png", chance, r["published"])]
        curves = {row: by_net for row, by_net in r["cells"].items()
                  if any("curve" in c for cs in by_net.values() for c in cs)}
        if curves:
            paths.append(recovery_plot(curves, out / "recovery.png", chance))
        return paths


def aux_verdicts(summary: dict, aux: dict | None) -> str:
    """Set each attack that read the aux set against the aux-only baseline of the same net (in
    `summary`, in place), and say it in lines under the table: an aux attack wins only where its
    ratio beats the baseline's by more than AUX_MARGIN."""
    base = summary.get(AUX_ONLY, {})
    lines = []
    for row in (aux or {}).get("attacks", []):
        for arch, cell in summary.get(row, {}).items():
            if arch not in base or base[arch]["ratio"] != base[arch]["ratio"]:
                continue
            cell["aux_only_ratio"] = base[arch]["ratio"]
            cell["beats_aux_only"] = cell["ratio"] > base[arch]["ratio"] + AUX_MARGIN
            lines.append(f"- {row} on {arch}: ratio {cell['ratio']:.2f} against aux-only {base[arch]['ratio']:.2f}: "
                         + ("beats the aux images alone" if cell["beats_aux_only"] else
                            f"no better than the aux images alone (+{AUX_MARGIN})"))
    if not lines:
        return ""
    return (f"Aux attacks against the aux-only baseline (each net trained on the {aux['size']} clean aux "
            "images alone):\n" + "\n".join(lines))


def uncalibrated_notes(rows) -> str:
    """A line under the table for each attack row whose published effect this evaluator did not
    reproduce (Attack.calibration): its ratios are not the protection's alone."""
    from ..attacks import ATTACKS

    lines = [f"- {row}: {ATTACKS.get(row).uncalibrated()}" for row in rows
             if row in ATTACKS.names() and ATTACKS.get(row).uncalibrated()]
    return "Uncalibrated attacks (BENCHMARKS.md, the 10k tier's calibration):\n" + "\n".join(lines) if lines else ""


def plot(summary: dict, nets, path: Path, chance: float, title: str) -> Path:
    from ..report.plots import grouped_bars

    groups = list(summary)
    series = {net: [100 * summary[g][net]["mean"] if net in summary[g] else float("nan") for g in groups]
              for net in nets}
    return grouped_bars(groups, series, path, hline=chance, title=f"audit of {title}: test accuracy per attack")


def audit_folder(published_dir, *, out_dir, test: str | None = None, test_per_class: int | None = None,
                 clean: str | None = None, clean_per_class: int | None = None, aux: str | None = None,
                 aux_split: str = "train", aux_per_class: int | None = None, subset_seed: int = 0,
                 authorized=None, log=lambda message: None, **kwargs) -> "AuditResult":
    """`audit` of a published folder, its inputs given as dataset specs: the clean baseline
    (default: the source the manifest names), the test set (default: the source's test split), the
    attacker's aux set (items of the published set removed when it is the same source) and the key
    (default: the one shipped in the folder, if any); the folder, key, clean and test sets are opened
    by `open_published`'s policy. Other arguments go to `audit`."""
    check_cheap(kwargs.get("attacks", "all"), kwargs.get("nets", ("cnn",)), kwargs.get("settings"))
    check_writable(out_dir)
    check_executor(kwargs.get("executor", "local"))
    if kwargs.get("cache") is not None and not isinstance(kwargs["cache"], CellCache):
        kwargs["cache"] = CellCache(check_cache_dir(kwargs["cache"]))
    opened = open_published(published_dir, authorized, test=test, test_per_class=test_per_class, clean=clean,
                            clean_per_class=clean_per_class, subset_seed=subset_seed, log=log)
    published, manifest, src = opened.data, opened.manifest, opened.source
    aux_set = None
    if aux:
        fixed = aux_split in FIXED_SPLITS  # a fixed range: its first N, nested like the tiers
        aux_set = load_dataset(aux, aux_split, per_class=aux_per_class if fixed else None)
        if src and aux == src["spec"] and (aux_split == src["split"] or "train" in (aux_split, src["split"])):
            taken = set(published.ids)  # same source: keep the attacker's images disjoint from the owner's
            aux_set = aux_set.subset([i for i, item in enumerate(aux_set.ids) if item not in taken])
        if aux_per_class and not fixed:
            aux_set = aux_set.per_class(aux_per_class, seed=subset_seed)
    recipe = kwargs["recipe"]
    log(f"audit of {published_dir}: {len(published)} images, test {len(opened.test)}, aux "
        f"{len(aux_set) if aux_set is not None else 'none'}, nets {','.join(kwargs.get('nets', ('cnn',)))}, "
        f"seeds {list(kwargs.get('seeds', (0,)))}, recipe {recipe.name}")
    return audit(published, opened.test, out_dir=out_dir, clean=opened.clean, aux=aux_set, key=opened.key,
                 key_recipe=opened.key_recipe, scheme=(manifest.get("extra") or {}).get("key"), rho=manifest.get("rho"),
                 log=log, published_fingerprint=opened.fingerprint, **kwargs)


def load_cells(out_dir, cache=None) -> list[dict]:
    """Every finished audit cell in the cell cache of an audit directory (default `out_dir`/cells),
    each with its "config" (the cache inputs) and "file" (for tests and tools), in table order of
    rows, then nets and seeds as found."""
    cells = []
    for p in sorted(Path(cache or Path(out_dir) / "cells").glob("audit/*.json")):
        record = json.loads(p.read_text())
        cells.append({**record["result"], "config": record["inputs"], "file": str(p)})
    return cells


__all__ = ["AuditResult", "audit", "audit_folder", "load_cells", "resolve_attacks"]
