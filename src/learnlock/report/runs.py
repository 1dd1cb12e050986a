"""The runs of a published dataset for `learnlock report`: finding them (by the published
manifest's fingerprint their JSON records) and reading each run kind's JSON into the page's tables
and measurements (`read_table1`, `read_audit`, `read_federated`, `read_certify`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from ..errors import LearnlockError

RUN_FILES = {"table1": "table1.json", "audit": "audit.json", "certify": "certify.json",
             "federated": "federated.json"}
SEARCH_DEPTH = 4       # how deep a RUN folder that is not itself a run is searched
SKIP_DIRS = {"cells", "work", "images"}  # caches and image trees never hold run folders


# ----------------------------------------------------------------------------- small helpers


def finite(x) -> float | None:
    """x as a float when it is a finite number, else None (the page shows no NaN)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LearnlockError(f"{path} cannot be read as JSON ({e}); the run folder is damaged, run it again") from None
    if not isinstance(data, dict):
        raise LearnlockError(f"{path} is not a learnlock result (not a JSON object)")
    return data


def written(path: Path) -> str:
    """When `path` was last written, UTC, to the minute."""
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def ratio_colour(ratio: float | None, high_is_good: bool = False) -> str:
    """Background colour of a cell by its learnability ratio: green where the protection holds
    (a hacker near 0; the authorized net near 1), red where it does not, grey without a ratio."""
    if ratio is None:
        return "#e4e4e4"
    r = min(max(ratio, 0.0), 1.0)
    good = r if high_is_good else 1 - r
    return f"hsl({round(120 * good)}, 70%, 82%)"


def _cell(mean, std, ratio, high_is_good=False, n=None) -> dict:
    ratio = finite(ratio)
    return {"mean": finite(mean), "std": finite(std), "ratio": ratio, "n": n,
            "colour": ratio_colour(ratio, high_is_good)}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ----------------------------------------------------------------------------- finding the runs


def run_fingerprints(kind: str, data: dict) -> list[str]:
    """The published-manifest fingerprints a run's JSON records (empty: an older learnlock wrote it)."""
    if kind == "audit":
        found = [data.get("published_fingerprint")]
    elif kind == "certify":
        found = [(data.get("published") or {}).get("fingerprint")]
    else:  # table1 and federated: one per published dataset (row, client)
        found = [p.get("fingerprint") for p in data.get("published") or [] if isinstance(p, dict)]
    return [f for f in found if isinstance(f, str)]


def run_kind(folder: Path) -> str | None:
    for kind, name in RUN_FILES.items():
        if (folder / name).is_file():
            return kind
    return None


def _run_folders(root: Path):
    """Run folders under `root` (not `root` itself), breadth first, skipping caches and images."""
    level = [root]
    for _ in range(SEARCH_DEPTH):
        below = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name.startswith(".") or child.name in SKIP_DIRS:
                    continue
                if run_kind(child):
                    yield child
                below.append(child)
        level = below


def find_runs(fingerprint: str, paths: Sequence, published=None) -> list[dict]:
    """The runs of the published dataset with manifest fingerprint `fingerprint` among `paths`:
    each path is a run folder (named: refused when it ran on other data or records no fingerprint)
    or a folder searched for run folders (refused when none of them ran on these data).
    Returns [{"kind", "path", "data", "written"}] in the order found."""
    runs, seen = [], set()
    what = f"{published} (fingerprint {fingerprint[:12]})" if published else f"fingerprint {fingerprint[:12]}"
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise LearnlockError(f"run folder {p} does not exist; give the output folder of a table1, audit, "
                                 "certify or federated run (or a folder that holds them)")
        if not p.is_dir():
            raise LearnlockError(f"run folder {p} is not a folder; give the folder a run wrote its JSON into")
        kind = run_kind(p)
        if kind:
            data = _read_json(p / RUN_FILES[kind])
            fps = run_fingerprints(kind, data)
            if not fps:
                raise LearnlockError(f"{p / RUN_FILES[kind]} records no published fingerprint (an older learnlock "
                                     f"wrote it); run the {kind} again to report it")
            if fingerprint not in fps:
                raise LearnlockError(f"{p} is a {kind} run of other published data (fingerprint {fps[0][:12]}), "
                                     f"not of {what}; give the runs made on this published dataset")
            found = [(p, kind, data)]
        else:
            found, others = [], 0
            for folder in _run_folders(p):
                k = run_kind(folder)
                try:
                    data = _read_json(folder / RUN_FILES[k])
                except LearnlockError:
                    others += 1
                    continue
                if fingerprint in run_fingerprints(k, data):
                    found.append((folder, k, data))
                else:
                    others += 1
            if not found:
                raise LearnlockError(
                    f"{p} holds no run of {what}: " + (f"its {others} run folder(s) ran on other published data"
                                                       if others else "no table1, audit, certify or federated "
                                                       "output was found in it") + "; give the runs made on this "
                    "published dataset")
        for folder, k, data in found:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                runs.append({"kind": k, "path": str(folder), "data": data,
                             "written": written(folder / RUN_FILES[k])})
    return runs


# ----------------------------------------------------------------------------- reading each run kind


WRONG_KEY_LABEL = "wrong key"
WRONG_KEY_ASSUMES = ("the published images and labels; the key scheme (family and public settings, from the "
                     "manifest) and a key of it from another secret, trained with the authorized recipe")


def _attack_names_by_label() -> dict[str, str]:
    from ..attacks import get_attack, list_attacks

    return {get_attack(n).label: n for n in list_attacks()}


def assumptions(name: str, settings: dict | None, facts: dict) -> list[str]:
    """What attack `name` (with `settings`) assumes of its attacker, in words, given the run's `facts`."""
    from ..attacks import create_attack

    try:
        return create_attack(name, **(settings or {})).assumptions(facts)
    except LearnlockError:  # an attack this learlock no longer has, or changed settings
        return ["(assumptions unknown to this learnlock)"]


def read_table1(run: dict, fingerprint: str, facts: dict) -> tuple[dict, list[dict], list[dict]]:
    """(the table for the page, authorized measurements, hacker measurements) of a table1 run."""
    d = run["data"]
    row = next(p["row"] for p in d["published"] if p.get("fingerprint") == fingerprint)
    rows = d["rows"]
    cols = list(rows["Original"][0]["hackers"])
    labels = _attack_names_by_label()
    ratios = d.get("ratios", {})
    table = {"kind": "table1", "path": run["path"], "columns": ["Authorized", *cols], "rows": [], "row": row}
    for name, results in rows.items():
        r = ratios.get(name, {})
        cells = [_cell(*_mean_std([x["authorized"] for x in results]), r.get("authorized_ratio"), True)]
        for c in cols:
            cells.append(_cell(*_mean_std([x["hackers"][c] for x in results]), (r.get("hacker_ratios") or {}).get(c)))
        table["rows"].append({"name": name, "cells": cells, "this": name == row})
    this = rows[row]
    auth = [{"who": "authorized", "ratio": finite(ratios.get(row, {}).get("authorized_ratio")),
             "accuracy": statistics.fmean(x["authorized"] for x in this), "run": run["path"], "where": "table1"}]
    hackers = []
    for c in cols:
        if c.startswith(WRONG_KEY_LABEL):  # table1 --wrong-keys: the key's architecture from another seed
            name, arch, assumed = "wrong-key", "key", [WRONG_KEY_ASSUMES]
        else:
            arch, _, label = c.partition(" ")
            name = labels.get(label, label)
            assumed = assumptions(name, None, facts)
        hackers.append({"attack": name, "net": arch, "ratio": finite(ratios[row]["hacker_ratios"].get(c)),
                        "accuracy": statistics.fmean(x["hackers"][c] for x in this), "run": run["path"],
                        "where": "table1", "assumptions": assumed})
    return table, auth, hackers


def read_audit(run: dict, facts: dict) -> tuple[dict, list[dict], list[dict]]:
    from ..scenarios.audit import AUTHORIZED, AUX_ONLY, CLEAN

    d = run["data"]
    nets = d["nets"]
    aux = d.get("aux") or {}
    facts = {**facts, "aux_size": aux.get("size"), "train_size": d.get("train_size")}
    settings = d.get("attacks") or {}
    table = {"kind": "audit", "path": run["path"], "columns": nets, "rows": [], "skipped": d.get("skipped", []),
             "aux": aux or None, "seeds": d.get("seeds")}
    auth, hackers = [], []
    for row, by_net in d["summary"].items():
        cells = []
        for net in nets:
            s = by_net.get(net)
            if row == AUTHORIZED and s is None and len(by_net) == 1:
                s = next(iter(by_net.values()))  # the authorized net has its own architecture
            cells.append(_cell(s["mean"], s["std"], s["ratio"], row == AUTHORIZED, s.get("n")) if s else None)
        label = row
        if row == AUTHORIZED and d.get("key"):
            label = f"authorized ({d['key']['arch']} {d['key']['fingerprint'][:8]})"
        kind = "baseline" if row == AUX_ONLY else row if row in (CLEAN, AUTHORIZED) else "attack"
        table["rows"].append({"name": label, "cells": cells, "kind": kind})
        for net, s in by_net.items():
            if row == AUX_ONLY:  # what the aux images alone are worth: a baseline, not an attack
                continue
            if row == AUTHORIZED:
                auth.append({"who": "authorized", "ratio": finite(s["ratio"]), "accuracy": s["mean"],
                             "run": run["path"], "where": "audit"})
            elif row != CLEAN:
                hackers.append({"attack": row, "net": net, "ratio": finite(s["ratio"]), "accuracy": s["mean"],
                                "run": run["path"], "where": "audit", "aux_only_ratio": s.get("aux_only_ratio"),
                                "assumptions": assumptions(row, settings.get(row), facts)})
    return table, auth, hackers


def read_federated(run: dict, fingerprint: str, facts: dict) -> tuple[dict, list[dict], list[dict]]:
    """Federated rows; ratios against Joint (the global network on the union of the clean shards)."""
    from ..report import learnability_ratio

    d = run["data"]
    k = d["num_classes"]
    rows = d["rows"]
    joint = rows.get("Joint", {}).get("all")
    client = next(p["client"] for p in d["published"] if p.get("fingerprint") == fingerprint)
    labels = _attack_names_by_label()
    table = {"kind": "federated", "path": run["path"], "client": client, "clients": d.get("clients"),
             "split": d.get("split"), "columns": ["first half of the classes", "second half", "all", "ratio"],
             "rows": []}
    auth, hackers = [], []
    for name, r in rows.items():
        ratio = learnability_ratio(r["all"], joint, k) if joint is not None else float("nan")
        hacker = name not in ("Joint", "Global") and not name.startswith(("Separate-", "Server-"))
        table["rows"].append({"name": name, "first": finite(r.get("first")), "second": finite(r.get("second")),
                              "all": finite(r.get("all")), "train_size": r.get("train_size"),
                              "ratio": finite(ratio), "colour": ratio_colour(finite(ratio), not hacker)})
        if name == "Global":
            auth.append({"who": "authorized", "ratio": finite(ratio), "accuracy": r["all"], "run": run["path"],
                         "where": "federated"})
        elif hacker:
            label, _, arch = name.partition(" (")
            attack = labels.get(label, label)
            hackers.append({"attack": attack, "net": arch.rstrip(")"), "ratio": finite(ratio), "accuracy": r["all"],
                            "run": run["path"], "where": "federated (union of the clients' shards)",
                            "assumptions": assumptions(attack, None, {**facts, "train_size": d.get("train_size")})})
    return table, auth, hackers


def read_certify(run: dict) -> dict:
    d = run["data"]
    s = d.get("settings", {})
    return {"kind": "certify", "path": run["path"], "settings": s, "base_accuracy": d.get("base_accuracy"),
            "empirical_q_quantile": d.get("empirical_q_quantile"), "samples": len(d.get("accuracies", [])),
            "rows": [{"eta": r["eta"], "bound": finite(r["bound"]) if r.get("bound") is not None else None,
                      "abstain": r["abstain"], "k": r.get("k")} for r in d.get("rows", [])],
            "surrogate": d.get("surrogate", {}), "test": d.get("test", {})}
