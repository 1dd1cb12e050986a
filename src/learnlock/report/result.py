"""The one shape of a scenario's result: `Table1`, `Certificate`, `AuditResult`, `FederatedResult`.

    result = audit_folder("runs/pub", out_dir="runs/audit")   # any scenario
    result.to_dict()        # what STEM.json holds (provenance included)
    print(result.markdown())
    result.save("runs/x")   # STEM.json, STEM.md and the figures, each written atomically
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes, atomic_write_json


class Result:
    """Subclasses set `stem` (the file names) and give `to_dict`, `markdown` and `plot`."""

    stem = ""

    def to_dict(self) -> dict:
        raise NotImplementedError

    def markdown(self) -> str:
        raise NotImplementedError

    def plot(self, out: Path) -> list[Path]:
        """The figures, written under `out`; none by default."""
        return []

    def save(self, out) -> list[Path]:
        """STEM.json, STEM.md (ending in one newline) and the figures under `out`; returns their paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        markdown = self.markdown()
        atomic_write_json(out / f"{self.stem}.json", self.to_dict())
        atomic_write_bytes(out / f"{self.stem}.md", (markdown if markdown.endswith("\n") else markdown + "\n").encode())
        return [out / f"{self.stem}.json", out / f"{self.stem}.md", *self.plot(out)]


@dataclass
class RecordResult(Result):
    """A result kept as the record its JSON holds; `result["rows"]` reads one of its entries."""

    record: dict

    def to_dict(self) -> dict:
        return self.record

    def __getitem__(self, name: str):
        return self.record[name]
