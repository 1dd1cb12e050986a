"""`learnlock report`: one self-contained HTML page for a published dataset and the runs made on it.

    content = build_report("runs/pub", ["runs/table1", "runs/audit"])  # the page's content (JSON-able)
    write_report("runs/pub", ["runs"], "runs/report.html")            # report.html + report.json beside it

A run folder is one that `table1`, `audit`, `certify` or `federated` wrote (its table1.json,
audit.json, certify.json or federated.json records the sha256 of the published manifest it ran on,
`published_fingerprint`). Each RUN path is either such a folder, named (refused when it ran on
other data), or a folder searched for them (only those of this published dataset are taken; none
is an error). The page, top to bottom:

  verdict        whom the data resist and what breaks them, each attacker with its worst measured
                 learnability ratio and its assumptions; attacks of the method's threat model that
                 were not measured show as "not measured", never as a pass
  protected      method, settings, key family, budget, PSNR / SSIM and the residual against the
                 clean originals (when at hand: `originals`, or a local source the manifest names),
                 a clean / noise / protected grid per class
  who learns     the authorized network against every hacker (table1, federated): tables, bars
  what breaks    the audit table (every cell coloured by its ratio), the front, the certified curve
  threat model   and provenance (versions, commit, seeds, sizes, dates, threads, device)

Images are inline PNG data URIs, styles inline CSS: the page needs no network and no JavaScript.
The template is Jinja2 (report/templates/report.html.j2), autoescaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from ..errors import LearnlockError
from ..files import atomic_write_bytes
from ..provenance import result_provenance

RUN_FILES = {"table1": "table1.json", "audit": "audit.json", "certify": "certify.json",
             "federated": "federated.json"}
RESIST_MAX = 0.5       # a hacker at or below this learnability ratio is resisted (UGE's bar)
AUTHORIZED_MIN = 0.9   # the authorized network should keep at least this ratio
SEARCH_DEPTH = 4       # how deep a RUN folder that is not itself a run is searched
SKIP_DIRS = {"cells", "work", "images"}  # caches and image trees never hold run folders


# ----------------------------------------------------------------------------- small helpers


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LearnlockError(f"{path} cannot be read as JSON ({e}); the run folder is damaged, run it again") from None
    if not isinstance(data, dict):
        raise LearnlockError(f"{path} is not a learnlock result (not a JSON object)")
    return data


def _written(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _clean_json(x):
    """NaN and infinities as null: the report's JSON is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean_json(v) for v in x]
    return x


def ratio_colour(ratio: float | None, high_is_good: bool = False) -> str:
    """Background colour of a cell by its learnability ratio: green where the protection holds
    (a hacker near 0; the authorized net near 1), red where it does not, grey without a ratio."""
    if ratio is None:
        return "#e4e4e4"
    r = min(max(ratio, 0.0), 1.0)
    good = r if high_is_good else 1 - r
    return f"hsl({round(120 * good)}, 70%, 82%)"


def _cell(mean, std, ratio, high_is_good=False, n=None) -> dict:
    ratio = _finite(ratio)
    return {"mean": _finite(mean), "std": _finite(std), "ratio": ratio, "n": n,
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
                             "written": _written(folder / RUN_FILES[k])})
    return runs


# ----------------------------------------------------------------------------- the clean originals


LOCAL_SPECS = ("folder", "npz")  # dataset specs read from local files only: never a download


def load_originals(published_dir, manifest: dict, data, originals: str | None = None):
    """(clean originals in the published order, or None; words on where they came from or why not).
    `originals` is a dataset spec (its train split); without it, the source the manifest names is
    read when it is a local folder or npz file (a named dataset could need a download)."""
    from ..data import load_dataset

    if originals:
        clean = load_dataset(originals, "train")
        note = f"originals: {originals}"
    else:
        src = (manifest.get("extra") or {}).get("source_load")
        if not src:
            return None, "not measured (no originals given: --originals DATA_SPEC)"
        if src["spec"].partition(":")[0] not in LOCAL_SPECS:
            return None, (f"not measured (no originals given; the source {src['spec']} is not a local folder or "
                          "npz file: give --originals DATA_SPEC)")
        try:
            clean = load_dataset(src["spec"], src["split"], per_class=src["per_class"], seed=src["seed"])
        except LearnlockError as e:
            return None, f"not measured (the source {src['spec']} cannot be read: {e}; give --originals DATA_SPEC)"
        note = f"originals: the source {src['spec']} the manifest names"
    where = {item: i for i, item in enumerate(clean.ids)}
    missing = [item for item in data.ids if item not in where]
    if missing:
        if not originals:
            return None, (f"not measured (the source {src['spec']} no longer holds {len(missing)} of the published "
                          "items; give --originals DATA_SPEC)")
        raise LearnlockError(f"`originals` {originals} does not hold {len(missing)} of the {len(data)} published "
                             f"items of {published_dir} (e.g. {missing[0]!r}); give the dataset they were made from")
    clean = clean.subset([where[item] for item in data.ids])
    if tuple(clean.images.shape) != tuple(data.images.shape):
        raise LearnlockError(f"originals {clean.source} have images of shape {tuple(clean.images.shape[1:])}, the "
                             f"published ones {tuple(data.images.shape[1:])}; give the dataset they were made from")
    # same ids are not the same images (npz ids are indices): each item may move only as far as the budget allows
    from ..data.manifest import change_bound

    moved = (data.images.float() - clean.images.float()).abs().flatten(1).mean(1)
    bound = change_bound(manifest)
    worst = int(moved.argmax())
    if float(moved[worst]) > bound:
        message = (f"{clean.source} is not what {published_dir} was made from: item {data.ids[worst]!r} differs by "
                   f"{float(moved[worst]):.1f} grey levels on average, more than the published budget allows "
                   f"({bound:.1f})")
        if originals:
            raise LearnlockError(f"`originals` {message}; give the dataset they were made from")
        return None, f"not measured ({message}; give --originals DATA_SPEC)"
    return clean, note


def image_quality(clean, protected, index: Sequence[int]) -> dict:
    """PSNR (dB, over all protected items together) and mean SSIM (scikit-image) of the protected
    items against their originals, and the residual (published - clean, grey levels)."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    index = list(index)
    if not index:
        return {"psnr_db": None, "ssim": None, "residual": None, "count": 0}
    c = clean.images[index].permute(0, 2, 3, 1).numpy()
    p = protected.images[index].permute(0, 2, 3, 1).numpy()
    d = p.astype(np.int16) - c.astype(np.int16)
    psnr = float(peak_signal_noise_ratio(c, p, data_range=255)) if d.any() else math.inf
    side = min(c.shape[1], c.shape[2])
    win = min(7, side if side % 2 else side - 1)
    ssim = (statistics.fmean(float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win))
                             for a, b in zip(c, p)) if win >= 3 else None)
    return {"psnr_db": psnr, "ssim": ssim, "count": len(index), "ssim_window": win if win >= 3 else None,
            "residual": {"linf": int(np.abs(d).max()), "mean_abs": float(np.abs(d).mean()),
                         "rms": float(np.sqrt((d.astype(np.float64) ** 2).mean())),
                         "changed": float((d != 0).mean())}}


# ----------------------------------------------------------------------------- reading each run kind


def _attack_names_by_label() -> dict[str, str]:
    from ..attacks import get_attack, list_attacks

    return {get_attack(n).label: n for n in list_attacks()}


def _assumptions(name: str, settings: dict | None, facts: dict) -> list[str]:
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
    auth = [{"who": "authorized", "ratio": _finite(ratios.get(row, {}).get("authorized_ratio")),
             "accuracy": statistics.fmean(x["authorized"] for x in this), "run": run["path"], "where": "table1"}]
    hackers = []
    for c in cols:
        arch, _, label = c.partition(" ")
        name = labels.get(label, label)
        hackers.append({"attack": name, "net": arch, "ratio": _finite(ratios[row]["hacker_ratios"].get(c)),
                        "accuracy": statistics.fmean(x["hackers"][c] for x in this), "run": run["path"],
                        "where": "table1", "assumptions": _assumptions(name, None, facts)})
    return table, auth, hackers


def read_audit(run: dict, facts: dict) -> tuple[dict, list[dict], list[dict]]:
    from ..scenarios.audit import AUTHORIZED, CLEAN

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
        table["rows"].append({"name": label, "cells": cells, "kind": row if row in (CLEAN, AUTHORIZED) else "attack"})
        for net, s in by_net.items():
            if row == AUTHORIZED:
                auth.append({"who": "authorized", "ratio": _finite(s["ratio"]), "accuracy": s["mean"],
                             "run": run["path"], "where": "audit"})
            elif row != CLEAN:
                hackers.append({"attack": row, "net": net, "ratio": _finite(s["ratio"]), "accuracy": s["mean"],
                                "run": run["path"], "where": "audit",
                                "assumptions": _assumptions(row, settings.get(row), facts)})
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
        table["rows"].append({"name": name, "first": _finite(r.get("first")), "second": _finite(r.get("second")),
                              "all": _finite(r.get("all")), "train_size": r.get("train_size"),
                              "ratio": _finite(ratio), "colour": ratio_colour(_finite(ratio), not hacker)})
        if name == "Global":
            auth.append({"who": "authorized", "ratio": _finite(ratio), "accuracy": r["all"], "run": run["path"],
                         "where": "federated"})
        elif hacker:
            label, _, arch = name.partition(" (")
            attack = labels.get(label, label)
            hackers.append({"attack": attack, "net": arch.rstrip(")"), "ratio": _finite(ratio), "accuracy": r["all"],
                            "run": run["path"], "where": "federated (union of the clients' shards)",
                            "assumptions": _assumptions(attack, None, {**facts, "train_size": d.get("train_size")})})
    return table, auth, hackers


def read_certify(run: dict) -> dict:
    d = run["data"]
    s = d.get("settings", {})
    return {"kind": "certify", "path": run["path"], "settings": s, "base_accuracy": d.get("base_accuracy"),
            "empirical_q_quantile": d.get("empirical_q_quantile"), "samples": len(d.get("accuracies", [])),
            "rows": [{"eta": r["eta"], "bound": _finite(r["bound"]) if r.get("bound") is not None else None,
                      "abstain": r["abstain"], "k": r.get("k")} for r in d.get("rows", [])],
            "surrogate": d.get("surrogate", {}), "test": d.get("test", {})}


# ----------------------------------------------------------------------------- the verdict


def verdict(auth: list[dict], hackers: list[dict], threat: dict, facts: dict) -> dict:
    """Worst case over the measured attacks: per attack its highest ratio over nets and runs; an
    attack of the threat model without a measurement is "not measured" (never a pass)."""
    by_attack: dict[str, list[dict]] = {}
    for h in hackers:
        by_attack.setdefault(h["attack"], []).append(h)
    attackers = []
    for name in dict.fromkeys([*by_attack, *threat["attacks"]]):
        found = by_attack.get(name, [])
        rated = [h for h in found if h["ratio"] is not None]
        if not found:
            attackers.append({"attack": name, "status": "not measured", "ratio": None, "colour": ratio_colour(None),
                              "assumptions": _assumptions(name, None, {**facts, "aux_size": "some",
                                                                       "train_size": facts.get("train_size")}),
                              "measured": []})
            continue
        worst = max(rated, key=lambda h: h["ratio"]) if rated else found[0]
        status = ("no ratio" if not rated else "resists" if worst["ratio"] <= RESIST_MAX else "breaks")
        attackers.append({"attack": name, "status": status, "ratio": worst["ratio"], "net": worst["net"],
                          "accuracy": worst["accuracy"], "run": worst["run"], "where": worst["where"],
                          "colour": ratio_colour(worst["ratio"]), "assumptions": worst["assumptions"],
                          "measured": [{k: h[k] for k in ("net", "ratio", "accuracy", "run", "where")} for h in found]})
    rated_auth = [a for a in auth if a["ratio"] is not None]
    authorized = min(rated_auth, key=lambda a: a["ratio"]) if rated_auth else None
    breaks = [a for a in attackers if a["status"] == "breaks"]
    resists = [a for a in attackers if a["status"] == "resists"]
    missing = [a for a in attackers if a["status"] == "not measured"]
    measured = [a for a in attackers if a["status"] not in ("not measured",)]
    auth_ok = authorized is None or authorized["ratio"] >= AUTHORIZED_MIN
    if not measured:
        level, headline = "unknown", "Not measured: no attack was run on these data"
    elif breaks:
        worst = max(breaks, key=lambda a: a["ratio"])
        level = "broken"
        headline = (f"Broken: {worst['attack']} learns these data at ratio {worst['ratio']:.2f} "
                    f"({len(breaks)} of {len(measured)} measured attacks break them)")
    elif not resists:
        level, headline = "unknown", "No ratio: the clean baselines did not learn, so no attack could be rated"
    else:
        worst = max(resists, key=lambda a: a["ratio"])
        level = "holds" if auth_ok else "costly"
        headline = (f"Resists every measured attack (worst: {worst['attack']} at ratio {worst['ratio']:.2f})"
                    + ("" if auth_ok else f", but the authorized network keeps only ratio {authorized['ratio']:.2f}"))
    if missing:
        headline += f"; {len(missing)} attack{'s' if len(missing) != 1 else ''} of the threat model not measured"
    if authorized is not None and not auth_ok and level == "broken":
        headline += f"; the authorized network keeps only ratio {authorized['ratio']:.2f}"
    return {"level": level, "headline": headline, "authorized": authorized, "authorized_min": AUTHORIZED_MIN,
            "resist_max": RESIST_MAX, "attackers": attackers, "breaks": [a["attack"] for a in breaks],
            "resists": [a["attack"] for a in resists], "not_measured": [a["attack"] for a in missing]}


# ----------------------------------------------------------------------------- figures


def ratio_bars_png(v: dict) -> bytes | None:
    """Horizontal bars: the authorized network's ratio and each measured attacker's worst ratio,
    with the 0.5 and 0.9 bars."""
    from matplotlib.figure import Figure

    from .plots import figure_png

    bars = []
    if v["authorized"] is not None:
        bars.append(("authorized", v["authorized"]["ratio"], "#2c7fb8"))
    bars += [(a["attack"], a["ratio"], "#d7301f" if a["status"] == "breaks" else "#31a354")
             for a in v["attackers"] if a["ratio"] is not None]
    if not bars:
        return None
    fig = Figure(figsize=(6.5, 0.35 * len(bars) + 1.1))
    ax = fig.subplots()
    names, values, colours = zip(*bars)
    ys = range(len(bars))[::-1]
    ax.barh(list(ys), values, color=colours)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=8)
    ax.axvline(RESIST_MAX, color="#555", ls="--", lw=1)
    ax.axvline(AUTHORIZED_MIN, color="#2c7fb8", ls=":", lw=1)
    ax.set_xlim(min(0.0, min(values) - 0.05), max(1.1, max(values) + 0.05))
    ax.set_xlabel(f"learnability ratio (hackers should stay <= {RESIST_MAX}, the authorized net >= {AUTHORIZED_MIN})",
                  fontsize=8)
    return figure_png(fig)


def front_png(points: dict[str, tuple[float, float]]) -> bytes | None:
    """Authorized ratio against the worst attacker's ratio, per configuration (table1 row, audit)."""
    import tempfile

    from .plots import scatter_front

    if not points:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = scatter_front(points, Path(tmp) / "front.png", title="front: authorized vs worst attacker")
        return path.read_bytes()


# ----------------------------------------------------------------------------- the report


def build_report(published, runs: Sequence = (), *, originals: str | None = None,
                 figures: bool = True) -> dict:
    """The report's content: a JSON-able dict (see the module docstring); with `figures`, its
    "figures" entry maps names to PNG data URIs (the HTML's images)."""
    from ..data.published import load_published, published_fingerprint
    from ..protections import get_protection
    from .plots import class_grid_png

    published = Path(published)
    data, manifest = load_published(published)  # every file's sha256 checked
    fingerprint = published_fingerprint(manifest)
    found = find_runs(fingerprint, runs, published)
    clean, originals_note = load_originals(published, manifest, data, originals)
    protected_index = [i for i, item in enumerate(manifest["items"]) if item["protected"]]
    quality = image_quality(clean, data, protected_index) if clean is not None else None

    extra = manifest.get("extra") or {}
    try:
        method_cls = get_protection(manifest["method"])
    except LearnlockError:  # a method of another learnlock
        method_cls = None
    threat = method_cls.threat_model() if method_cls else {
        "attacks": [], "assumes": f"{manifest['method']} is not a method this learnlock knows; its threat model "
                                  "is unknown"}
    rho = manifest.get("rho")
    facts = {"train_size": len(data), "aux_size": None,
             "rho": None if rho is None else f"{rho:.4g} ({255 * rho:.3g}/255)"}
    auth_info = manifest.get("authorized") or {}
    key = extra.get("key") or {}
    protected = {
        "path": str(published), "fingerprint": fingerprint, "method": manifest["method"],
        "preset": manifest["settings"].get("preset"), "settings": manifest["settings"], "rho": manifest.get("rho"),
        "rho_levels": None if manifest.get("rho") is None else round(255 * manifest["rho"], 2),
        "norm": extra.get("norm"), "seed": manifest.get("seed"),
        "key": {"family": key.get("family"), "settings": key.get("settings"), "removed_dims": key.get("removed_dims")}
        if key else None,
        "authorized": [{"arch": n["arch"], "fingerprint": n["fingerprint"]} for n in auth_info.get("networks", [])],
        "recipe": auth_info.get("recipe"), "source": manifest["source"], "size": len(data),
        "classes": manifest["classes"], "protected_fraction": manifest.get("protected_fraction"),
        "authenticated": bool((manifest.get("authentication") or {}).get("macs")),
        "diagnostics": extra.get("diagnostics"), "originals": originals_note, "quality": quality,
    }

    who, breaks, certs, auth, hackers, front = [], [], [], [], [], {}
    for run in found:
        if run["kind"] == "table1":
            table, a, h = read_table1(run, fingerprint, facts)
            who.append(table)
            r = run["data"].get("ratios", {})
            for name in run["data"]["rows"]:
                if name != "Original" and _finite(r[name]["authorized_ratio"]) is not None \
                        and _finite(r[name]["worst_hacker_ratio"]) is not None:
                    front[f"{name}{' (this)' if name == table['row'] else ''}"] = (
                        r[name]["worst_hacker_ratio"], r[name]["authorized_ratio"])
        elif run["kind"] == "federated":
            table, a, h = read_federated(run, fingerprint, facts)
            who.append(table)
        elif run["kind"] == "audit":
            table, a, h = read_audit(run, facts)
            breaks.append(table)
            rated = [x["ratio"] for x in h if x["ratio"] is not None]
            ra = [x["ratio"] for x in a if x["ratio"] is not None]
            if rated and ra:
                front[f"audit {Path(run['path']).name}"] = (max(rated), min(ra))
        else:
            certs.append(read_certify(run))
            continue
        auth += a
        hackers += h
    v = verdict(auth, hackers, threat, facts)

    prov = [{"what": "published dataset", "path": str(published), "written": _written(published / "manifest.json"),
             **{k: manifest.get(k) for k in ("learnlock_version", "git_commit", "torch_version", "cpu_threads")},
             "device": "not recorded (a manifest never records the device)", "seeds": [manifest.get("seed")],
             "sizes": f"{len(data)} images {'x'.join(map(str, manifest['source']['shape']))}"}]
    for run in found:
        d = run["data"]
        seeds = d.get("seeds") or ([d["settings"].get("seed")] if run["kind"] == "certify" else None)
        sizes = ", ".join(f"{what} {n}" for what, n in (
            ("train", d.get("train_size")), ("test", d.get("test_size") or (d.get("test") or {}).get("size")),
            ("aux", (d.get("aux") or {}).get("size")), ("weight samples", len(d.get("accuracies") or []) or None))
            if n is not None)
        recipe = d.get("recipe")
        prov.append({"what": run["kind"], "path": run["path"], "written": run["written"],
                     **{k: d.get(k) for k in ("learnlock_version", "git_commit", "torch_version", "cpu_threads")},
                     "device": d.get("device") or "not recorded", "seeds": seeds, "sizes": sizes,
                     "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe})
    content = {
        "format": "learnlock.report/1",
        "title": f"learnlock report: {manifest['method']} on {manifest['source'].get('spec') or published.name}",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "generator": result_provenance(),
        "verdict": v, "protected": protected, "who_learns": who, "what_breaks": breaks, "certify": certs,
        "front": {name: {"worst_attacker": p[0], "authorized": p[1]} for name, p in front.items()},
        "threat_model": {"method": manifest["method"], **threat}, "provenance": prov,
        "runs": [{"kind": r["kind"], "path": r["path"]} for r in found],
    }
    if figures:
        figs = {"grid": _png_uri(class_grid_png(data.images, data.labels, data.classes,
                                                clean.images if clean is not None else None))}
        bars = ratio_bars_png(v)
        if bars:
            figs["ratios"] = _png_uri(bars)
        fp = front_png(front)
        if fp:
            figs["front"] = _png_uri(fp)
        for run in found:  # the plots each run wrote beside its JSON
            for name in ("authorized_vs_hackers.png", "audit.png", "recovery.png", "federated.png", "certify.png"):
                path = Path(run["path"]) / name
                if path.is_file():
                    figs[f"{run['path']}/{name}"] = _png_uri(path.read_bytes())
        content["figures"] = figs
    return _clean_json(content)


def render_html(content: dict) -> str:
    """The page (Jinja2, autoescaped) of `build_report`'s content."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("learnlock.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x: "n/a" if x is None else f"{100 * x:.1f}"
    env.filters["ratio"] = lambda x: "n/a" if x is None else f"{x:.2f}"
    env.filters["num"] = lambda x, d=3: "n/a" if x is None else f"{x:.{d}g}"
    env.filters["show"] = lambda x: json.dumps(x) if isinstance(x, (dict, list)) else x
    env.globals["ratio_colour"] = ratio_colour
    return env.get_template("report.html.j2").render(r=content, figures=content.get("figures", {}))


def write_report(published, runs: Sequence = (), out="report.html", *, originals: str | None = None) -> dict:
    """Write the page to `out` and its content (without the images) as JSON beside it
    (`out` with .json); returns the content. Checks `out` before any work."""
    from ..data.published import check_writable

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise LearnlockError(f"`out` {out} should end in .html (the JSON is written beside it, with .json)")
    if out.is_dir():
        raise LearnlockError(f"`out` {out} is a folder; give a file name such as {out / 'report.html'}")
    check_writable(out)
    content = build_report(published, runs, originals=originals)
    atomic_write_bytes(out, render_html(content).encode())
    plain = {k: v for k, v in content.items() if k != "figures"}
    plain["figures"] = sorted(content.get("figures", {}))
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(plain, indent=2) + "\n").encode())
    return content


def report_command(published, runs: Sequence = (), out=None) -> str:
    """The `learnlock report` line that shows these results (what every command that writes results prints)."""
    import shlex

    published = Path(published)
    out = out or (Path(runs[0]) / f"report-{published.name}.html" if runs
                  else published.with_name(f"{published.name}.report.html"))
    return "learnlock report " + " ".join(shlex.quote(str(p)) for p in [published, *runs]) + \
        f" --out {shlex.quote(str(out))}"


__all__ = ["build_report", "find_runs", "image_quality", "load_originals", "ratio_colour", "render_html",
           "report_command", "verdict", "write_report"]
