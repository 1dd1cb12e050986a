"""Where outputs may go: refuse before any work an output that exists, cannot be written, or
lies inside the user's input data (nothing of the user's is ever overwritten)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import LearnlockError
from . import parse_spec
from .base import ImageDataset
from .manifest import FORMAT, MANIFEST


def source_path(spec: str) -> Path | None:
    """The file or folder a dataset spec reads from (folder:, npz:, published:), else None."""
    name, arg = parse_spec(spec or "")
    if not arg:
        return None
    if name == "folder":
        for split in (":train", ":test"):  # the folder loader appends ":<split>"
            if arg.endswith(split):
                arg = arg[: -len(split)]
                break
        return Path(arg)
    if name in ("npz", "published"):
        return Path(arg)
    return None


def _is_published_dir(path: Path) -> bool:
    try:
        with open(path / MANIFEST, "rb") as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(out_dir, overwrite: bool = False, source: ImageDataset | str | None = None) -> Path:
    """The early check a long protection runs before working; returns Path(out_dir).

    Refuses: an existing `out_dir` (unless `overwrite`; even then only an empty folder or a
    published dataset is replaced, never some other folder or a file), a parent that cannot be
    written, and (when `source` is given) a folder that is, contains or is inside the source
    dataset's file or folder.
    """
    out = Path(out_dir)
    resolved = out.resolve()
    if resolved == resolved.parent:
        raise LearnlockError(f"cannot publish into the file-system root {out}; choose another `out`")
    if source is not None:
        spec = source.source if isinstance(source, ImageDataset) else str(source)
        src = source_path(spec)
        if src is not None:
            src_r = src.resolve()
            if resolved == src_r or resolved.is_relative_to(src_r) or src_r.is_relative_to(resolved):
                raise LearnlockError(
                    f"{out} is, contains or is inside the source dataset {src}; "
                    "never writing over the input; choose another `out`"
                )
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():  # `overwrite` never replaces a file: do not suggest it
            raise LearnlockError(f"{out} exists and is not a folder; it is never replaced; choose another `out`")
        if not overwrite:
            raise LearnlockError(f"{out} exists; choose another `out` or pass `overwrite`")
        if any(out.iterdir()) and not _is_published_dir(out):
            raise LearnlockError(
                f"{out} exists and is not a published dataset (no learnlock manifest.json); "
                "refusing to replace it even with `overwrite`; choose another `out`"
            )
    return check_writable(out)


def check_writable(path, what: str = "out") -> Path:
    """Refuse, before the work, an output file or folder that could not be written afterwards;
    `what` names the parameter in the message."""
    out = Path(path)
    parent = _nearest_existing(out.resolve() if out.is_dir() else out.resolve().parent)
    if not parent.is_dir():
        raise LearnlockError(f"cannot write to {out} ({parent} is not a folder); choose another `{what}`")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".learnlock-write-test-", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise LearnlockError(f"cannot write to {out} ({e.strerror or e}); choose another `{what}`") from None
    return out


def clean_stale_temporaries(out) -> list[Path]:
    """Remove the temporary folders a killed write of `out` left beside it (.OUT.tmp-XXXXXXXX);
    returns what was removed."""
    import re
    import shutil

    out = Path(out)
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.tmp-[0-9a-f]{{8}}$")
    removed = []
    if out.parent.is_dir():
        for p in sorted(out.parent.iterdir()):
            if pattern.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed
