"""Checked downloads into the learnlock cache (real code; tests drive it through file:// URLs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ..errors import LearnlockError


def cache_dir() -> Path:
    """$LEARNLOCK_CACHE, else ~/.cache/learnlock."""
    return Path(os.environ.get("LEARNLOCK_CACHE", Path.home() / ".cache" / "learnlock"))


def system_dir(path: Path) -> Path | None:
    """`path`, a dataset folder a system package installs (/usr/share/datasets/...), or None when
    LEARNLOCK_NO_SYSTEM_DATA=1: the test suite then sees what a fresh machine sees, so a test
    that quietly depends on an installed dataset fails here and not on a new user's machine."""
    return None if os.environ.get("LEARNLOCK_NO_SYSTEM_DATA", "") not in ("", "0") else Path(path)


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Fetch `url` to `dest` atomically and check its md5; an existing good file is reused."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5_file(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None and md5_file(Path(tmp)) != md5:
            raise LearnlockError(f"download of {url} is corrupt (md5 mismatch); delete {dest} and retry")
        os.replace(tmp, dest)
    except OSError as e:
        raise LearnlockError(
            f"could not download {url} ({e}); download it by hand into {dest.parent}"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
