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
from pathlib import Path
from typing import Sequence

from ..errors import LearnlockError
from ..files import atomic_write_bytes
from ..provenance import result_provenance
from .originals import image_quality, load_originals
from .runs import (assumptions, find_runs, finite, ratio_colour, read_audit, read_certify, read_federated,
                   read_table1, written)

RESIST_MAX = 0.5       # a hacker at or below this learnability ratio is resisted (UGE's bar)
AUTHORIZED_MIN = 0.9   # the authorized network should keep at least this ratio


# ----------------------------------------------------------------------------- small helpers


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


def applies(attack: str, scheme: dict | None) -> bool:
    """False for an attack of the threat model that cannot run against this key scheme (a grid
    search over one colour direction against a block key): not a gap in the measurements."""
    from ..attacks import ATTACKS

    return attack not in ATTACKS.names() or ATTACKS.get(attack).applies_to(scheme)


def calibration_of(attack: str) -> dict | None:
    """{"status", "text"} of a registered attack's calibration at the 10k tier (Attack.calibration)."""
    from ..attacks import ATTACKS

    said = ATTACKS.get(attack).calibration if attack in ATTACKS.names() else None
    return {"status": said[0], "text": said[1]} if said else None


# ----------------------------------------------------------------------------- the verdict


def verdict(auth: list[dict], hackers: list[dict], threat: dict, facts: dict) -> dict:
    """Worst case over the measured attacks: per attack its highest ratio over nets and runs; an
    attack of the threat model without a measurement is "not measured" (never a pass); an attack
    above the bar that its aux-only baseline matches (within AUX_MARGIN) is "aux alone": the
    attacker's clean images teach that much without the published data."""
    from ..scenarios.audit import AUX_MARGIN

    by_attack: dict[str, list[dict]] = {}
    for h in hackers:
        by_attack.setdefault(h["attack"], []).append(h)
    attackers = []
    for name in dict.fromkeys([*by_attack, *threat["attacks"]]):
        found = by_attack.get(name, [])
        calibration = calibration_of(name)
        rated = [h for h in found if h["ratio"] is not None]
        if not found:
            attackers.append({"attack": name, "status": "not measured", "ratio": None, "colour": ratio_colour(None),
                              "assumptions": assumptions(name, None, {**facts, "aux_size": "some",
                                                                      "train_size": facts.get("train_size")}),
                              "calibration": calibration, "measured": []})
            continue
        worst = max(rated, key=lambda h: h["ratio"]) if rated else found[0]
        status = ("no ratio" if not rated else "resists" if worst["ratio"] <= RESIST_MAX else "breaks")
        base = worst.get("aux_only_ratio")
        if status == "breaks" and base is not None and worst["ratio"] <= base + AUX_MARGIN:
            # the attacker's clean aux images alone teach as much: the published data add nothing
            status = "aux alone"
        attackers.append({"attack": name, "status": status, "ratio": worst["ratio"], "net": worst["net"],
                          "accuracy": worst["accuracy"], "run": worst["run"], "where": worst["where"],
                          "colour": ratio_colour(worst["ratio"]), "assumptions": worst["assumptions"],
                          "aux_only_ratio": base, "calibration": calibration,
                          "measured": [{k: h[k] for k in ("net", "ratio", "accuracy", "run", "where")} for h in found]})
    rated_auth = [a for a in auth if a["ratio"] is not None]
    authorized = min(rated_auth, key=lambda a: a["ratio"]) if rated_auth else None
    breaks = [a for a in attackers if a["status"] == "breaks"]
    resists = [a for a in attackers if a["status"] == "resists"]
    aux_alone = [a for a in attackers if a["status"] == "aux alone"]
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
    elif not resists and not aux_alone:
        level, headline = "unknown", "No ratio: the clean baselines did not learn, so no attack could be rated"
    else:
        level = "holds" if auth_ok else "costly"
        if resists:
            worst = max(resists, key=lambda a: a["ratio"])
            headline = f"Resists every measured attack (worst: {worst['attack']} at ratio {worst['ratio']:.2f})"
        else:
            headline = "No measured attack learns more from these data than from its clean aux images alone"
        if aux_alone:
            headline += (f"; {', '.join(a['attack'] for a in aux_alone)} reach{'es' if len(aux_alone) == 1 else ''} "
                         f"ratio {max(a['ratio'] for a in aux_alone):.2f}, as the attacker's clean aux images alone do")
        if not auth_ok:
            headline += f", but the authorized network keeps only ratio {authorized['ratio']:.2f}"
    if missing:
        headline += f"; {len(missing)} attack{'s' if len(missing) != 1 else ''} of the threat model not measured"
    if authorized is not None and not auth_ok and level == "broken":
        headline += f"; the authorized network keeps only ratio {authorized['ratio']:.2f}"
    return {"level": level, "headline": headline, "authorized": authorized, "authorized_min": AUTHORIZED_MIN,
            "resist_max": RESIST_MAX, "attackers": attackers, "breaks": [a["attack"] for a in breaks],
            "resists": [a["attack"] for a in resists], "aux_alone": [a["attack"] for a in aux_alone],
            "not_measured": [a["attack"] for a in missing]}


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
    threat["attacks"] = [a for a in threat["attacks"] if applies(a, extra.get("key"))]
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
                if name != "Original" and finite(r[name]["authorized_ratio"]) is not None \
                        and finite(r[name]["worst_hacker_ratio"]) is not None:
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

    prov = [{"what": "published dataset", "path": str(published), "written": written(published / "manifest.json"),
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
