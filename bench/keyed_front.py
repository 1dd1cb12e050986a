"""The fronts of keyed design points from their `learnlock report` JSON files (issue 23): the worst
Normal hacker (or wrong key) and the worst attack against PSNR, and the worst attack against the
key cost. One point per report; nothing is trained here.

    python bench/keyed_front.py docs/examples/keyed-cifar10k/report.json \
        docs/examples/keyed-cifar10k-r16/report.json --out docs/bench/keyed10k_front.png

Groups of attackers (each point shows the worst measured ratio of its group):
- Normal: the plain retrain hackers and the wrong key (goal <= 0.3 at PSNR >= 30 dB);
- no clean data: attacks that hold only the published images and the public scheme (goal <= 0.5);
- any: every measured attacker, including those that hold the trained network or a leaked original.
Key cost: the plain `--plain` network minus the authorized one, both on the clean owner images
(table1's Original row), in points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from learnlock.files import atomic_write_json  # noqa: E402
from learnlock.report.plots import save_figure  # noqa: E402

NORMAL = {"retrain", "wrong-key"}
# what an attacker without clean data, the trained network or leaked originals can run
NO_CLEAN_DATA = {"iss-grayscale", "iss-jpeg", "iss-bits", "ueraser", "cutout", "mixup", "cutmix",
                 "adversarial-training", "adversarial-training-rho", "orthogonal-projection", "key-estimate",
                 "key-search", "key-search-gradient"}


def point(report: dict, plain: str) -> dict:
    """PSNR, key cost and the worst ratio of each attacker group of one report."""
    measured = [a for a in report["verdict"]["attackers"] if a.get("ratio") is not None]

    def worst(names=None):
        group = [a for a in measured if names is None or a["attack"] in names]
        top = max(group, key=lambda a: a["ratio"], default=None)
        return None if top is None else {"ratio": top["ratio"], "attack": top["attack"], "net": top.get("net")}

    original = next((row for t in report["who_learns"] if t["kind"] == "table1" for row in t["rows"]
                     if row["name"] == "Original"), None)
    cost = None
    if original is not None:
        columns = next(t["columns"] for t in report["who_learns"] if t["kind"] == "table1")
        by_column = dict(zip(columns, original["cells"]))
        if f"{plain} Normal" in by_column:
            cost = 100 * (by_column[f"{plain} Normal"]["mean"] - by_column["Authorized"]["mean"])
    protected = report["protected"]
    return {"rho_levels": protected["rho_levels"], "psnr_db": protected["quality"]["psnr_db"],
            "ssim": protected["quality"]["ssim"], "key_cost_points": cost,
            "authorized": report["verdict"]["authorized"]["ratio"],
            "normal": worst(NORMAL), "no_clean_data": worst(NO_CLEAN_DATA), "any": worst()}


def plot(points: dict[str, dict], path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for group, marker, colour, label in (("normal", "o", "C0", "worst Normal hacker / wrong key"),
                                         ("no_clean_data", "s", "C1", "worst attack without clean data"),
                                         ("any", "^", "C2", "worst attack (any)")):
        xs = [p["psnr_db"] for p in points.values() if p[group]]
        ys = [p[group]["ratio"] for p in points.values() if p[group]]
        left.plot(xs, ys, marker=marker, color=colour, ls="-", label=label)
    for name, p in points.items():
        left.annotate(name, (p["psnr_db"], p["normal"]["ratio"]), fontsize=7, xytext=(3, 6),
                      textcoords="offset points")
    left.axhline(0.3, color="green", ls=":", lw=1, label="Normal goal 0.3")
    left.axhline(0.5, color="grey", ls="--", lw=1, label="adaptive goal 0.5")
    left.axvline(30, color="green", ls=":", lw=1)
    left.set_xlabel("PSNR of the published images (dB; goal >= 30)")
    left.set_ylabel("learnability ratio (0 chance, 1 clean)")
    left.set_ylim(-0.05, 1.1)
    left.legend(fontsize=7)
    for name, p in points.items():
        if p["key_cost_points"] is None:
            continue
        right.scatter(p["key_cost_points"], p["any"]["ratio"], marker="^", color="C2")
        right.scatter(p["key_cost_points"], p["no_clean_data"]["ratio"], marker="s", color="C1")
        right.annotate(name, (p["key_cost_points"], p["no_clean_data"]["ratio"]), fontsize=7, xytext=(5, -3),
                       textcoords="offset points")
    right.axvline(3, color="green", ls=":", lw=1, label="key cost goal 3 points")
    right.axhline(0.5, color="grey", ls="--", lw=1)
    right.set_xlabel("key cost (points: plain net minus authorized, clean data)")
    right.set_ylabel("worst attack ratio (triangle: any, square: no clean data)")
    right.set_ylim(-0.05, 1.1)
    right.legend(fontsize=7)
    fig.suptitle("keyed design points: separation against image quality and key cost", fontsize=10)
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", nargs="+", help="report.json files (learnlock report), one per design point")
    p.add_argument("--plain", default="fastnet", help="the plain network the key cost is measured against")
    p.add_argument("--out", default="docs/bench/keyed10k_front.png")
    args = p.parse_args(argv)
    points = {}
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        if report.get("format") != "learnlock.report/1" or report["protected"]["method"] != "keyed":
            print(f"error: {path} is not a learnlock report of keyed data; give report.json files written "
                  "by `learnlock report`", file=sys.stderr)
            return 2
        p_ = point(report, args.plain)
        # the family and the budget name a design point; two reports of the same point stay apart
        name = f"{report['protected']['key']['family']} {p_['rho_levels']:.0f}/255"
        points[name if name not in points else f"{name} ({sum(n.startswith(name) for n in points) + 1})"] = p_
    out = Path(args.out)
    plot(points, out)
    atomic_write_json(out.with_suffix(".json"), points)
    for name, p_ in points.items():
        print(f"{name}: PSNR {p_['psnr_db']:.1f} dB, key cost {p_['key_cost_points']:.1f} pts, "
              f"Normal {p_['normal']['ratio']:.2f} ({p_['normal']['attack']}), "
              f"no clean data {p_['no_clean_data']['ratio']:.2f} ({p_['no_clean_data']['attack']}), "
              f"any {p_['any']['ratio']:.2f} ({p_['any']['attack']})")
    print(f"written: {out}, {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
