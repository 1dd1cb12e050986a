"""The paper's Table 9 (Ye & Wang, CVPR 2024, supplementary): the result of a federated run
(`learnlock.scenarios.federated`), its markdown and its figure.

    result = run_federated("cifar10", "runs/fed", global_arch="cnn", global_seed=1)
    print(result.markdown()); result["rows"]["Global"]["all"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models import NetSpec
from ..report import markdown_table
from ..report.plots import grouped_bars
from ..report.result import RecordResult


def table9_markdown(result: dict) -> str:
    """The paper's Table 9 layout: rows x (first-half, second-half, all classes), accuracy %."""
    c = result["num_classes"]
    half = (c + 1) // 2
    cols = [f"classes 0-{half - 1} %", f"classes {half}-{c - 1} %", "all %", "trained on (images)"]
    body = [[name, *(f"{100 * r[k]:.1f}" if r[k] == r[k] else "n/a" for k in ("first", "second", "all")),
             str(r["train_size"])] for name, r in result["rows"].items()]
    return markdown_table(["row", *cols], body)


def plot_table9(result: dict, path) -> Path:
    rows = result["rows"]
    c = result["num_classes"]
    half = (c + 1) // 2
    series = {label: [100 * r[k] for r in rows.values()]
              for k, label in (("first", f"classes 0-{half - 1}"), ("second", f"classes {half}-{c - 1}"),
                               ("all", "all classes"))}
    return grouped_bars(list(rows), series, path, hline=100 / c,
                        title=f"federated ({result['clients']} clients, split {result['split']}): test accuracy")


@dataclass
class FederatedResult(RecordResult):
    """A federated run: federated.json's record (result["rows"], ["issued"], ...); `markdown()` is the
    paper's Table 9; `save(out)` writes federated.json, federated.md and federated.png. `run_federated`
    adds the global `key`, where it kept it (`key_path`, None for a given key file) and the `source`."""

    stem = "federated"
    key: NetSpec | None = None
    key_path: Path | None = None
    source: str = ""

    def markdown(self) -> str:
        return table9_markdown(self.record)

    def plot(self, out: Path) -> list[Path]:
        return [plot_table9(self.record, Path(out) / "federated.png")]
