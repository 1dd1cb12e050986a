from __future__ import annotations

import statistics
from typing import Sequence


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """'m +- s' of values*scale; s is the sample std over seeds (0 for one seed)."""
    vals = [v * scale for v in values]
    m = statistics.fmean(vals)
    s = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def learnability_ratio(acc: float, clean_acc: float, num_classes: int) -> float:
    """(acc - chance) / (clean_acc - chance): 1 = as learnable as clean data, 0 = chance;
    NaN when the clean accuracy is within a point of chance."""
    chance = 1.0 / num_classes
    if clean_acc - chance < 0.01:  # clean training itself failed: a ratio would be noise
        return float("nan")
    return (acc - chance) / (clean_acc - chance)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
