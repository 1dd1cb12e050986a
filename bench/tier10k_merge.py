"""Rows of one protection measured under a later code version, set against the main calibration's
clean rows (issue 20: the paper's AR was fixed after the main table's cells were computed).

A ratio needs the clean reference of the same evaluator (the main table's clean rows of every defence the
later rows were measured under). Both code versions' clean cells of seed 0
were computed and agree to the last digit (`--check` lists them), so the later version's rows are
divided by the main table's clean means over every seed instead of recomputing clean cells.

    python bench/tier10k_merge.py --main docs/bench/cifar10k/calibration.json \\
        --rows runs/ar3/calibration.json --check docs/bench/cifar10k/ar/calibration.json \\
        --protection ar --out docs/bench/cifar10k/ar
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tier10k  # noqa: E402

from learnlock.files import atomic_write_bytes, atomic_write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--main", required=True, help="the main calibration.json (clean rows)")
    p.add_argument("--rows", required=True, help="calibration.json of the later code version")
    p.add_argument("--protection", default="ar")
    p.add_argument("--check", required=True, help="a calibration.json of the later version with its own clean "
                   "cells: each must equal the main table's cell of the same defence and seed")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    main_run, later = json.loads(Path(args.main).read_text()), json.loads(Path(args.rows).read_text())
    mine = [r for r in later["rows"] if r["protection"] == args.protection]
    # the main table's clean rows of every defence the later rows were measured under (and only those)
    clean = [r for r in main_run["rows"] if r["protection"] == "clean" and r["net"] == "fastnet"
             and r["defence"] in {m["defence"] for m in mine if m["net"] == "fastnet"}]
    rows = clean + mine
    meta = {k: v for k, v in later.items() if k not in ("rows", "table", "checks")}
    meta["clean_rows_from"] = {"code_version": main_run["code_version"], "git_commit": main_run.get("git_commit")}
    # the later version's own clean cells of the evaluator and defences set against it (a check file may hold more)
    defences = {c["defence"] for c in clean}
    own = [r for r in json.loads(Path(args.check).read_text())["rows"]
           if r["protection"] == "clean" and r["net"] == "fastnet" and r["defence"] in defences]
    checked = []
    for r in own:
        same = [c["accuracy"] for c in clean if (c["defence"], c["seed"]) == (r["defence"], r["seed"])]
        if same != [r["accuracy"]]:
            raise SystemExit(f"error: clean {r['defence']} seed {r['seed']} differs between code versions "
                             f"({same} vs {r['accuracy']}); recompute the clean rows under the later version")
        checked.append(f"{r['defence']} seed {r['seed']} {100 * r['accuracy']:.2f} %")
    summary, text = tier10k.summarise(rows, meta)
    note = (f"\nClean rows: the main table's (code {main_run['code_version']}), {len(clean)} cells; the later "
            f"version's own clean cells that it has equal them to the last digit ({'; '.join(checked)}).\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "calibration.json", {**meta, "rows": rows, **summary})
    atomic_write_bytes(out / "calibration.md", (text + note).encode())
    print(text + note)
    ratios = [t["ratio"] for t in summary["table"] if t["protection"] == args.protection]
    print(f"{args.protection}: median ratio {statistics.median([r for r in ratios if r is not None] or [0]):.2f}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
