"""learnlock's own files: atomic writes (a crash or a kill never leaves half a file where a result,
a key or a cache entry belongs), and the byte-canonical safetensors files of keys (NetSpec,
LockKey): the same key always gives the same bytes, and the fingerprint covers every tensor.

The key helpers live here, not in keys/, because models/netspec.py uses them and keys/ imports
models/: a helper module inside keys/ would close an import cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable

import safetensors.torch
import torch
from safetensors import SafetensorError

from .errors import LearnlockError


def _umask() -> int:
    try:  # Linux shows it without changing it (os.umask would, process-wide, for a moment)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # elsewhere: read by setting a strict mask, and put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, private: bool = False) -> None:
    """Write via a temp file in the same folder + os.replace, so a crash never leaves half a file.
    Permissions as open() gives (the umask applies); `private` files (keys) are 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o666 & ~_umask())  # mkstemp alone makes every file 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# ----------------------------------------------------------------------------- key files


def fingerprint(parts: Iterable[bytes], tensors: dict[str, torch.Tensor]) -> str:
    """sha256 hex of `parts`, then of each tensor's name, dtype, shape and bytes in name order;
    every field length-prefixed, so fields cannot run together."""
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(struct.pack("<Q", len(b)) + b)

    for part in parts:
        put(part)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        put(name.encode())
        put(str(t.dtype).encode())
        put(json.dumps(list(t.shape)).encode())
        # raw bytes via a uint8 view: works for bool/int/bfloat16 and 0-d tensors alike
        put(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def header(data: bytes) -> dict:
    """The JSON header of safetensors bytes (tensor offsets and "__metadata__")."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n])


def canonical(data: bytes) -> bytes:
    """Safetensors bytes with the header re-serialised, metadata keys sorted. safetensors writes its
    metadata from a hash map, so key order (hence file bytes) changes between processes; the tensor
    data is already laid out deterministically and is kept as is."""
    n = struct.unpack("<Q", data[:8])[0]
    head = header(data)
    meta = head.pop("__metadata__", None) or {}
    tensors = sorted(head.items(), key=lambda kv: kv[1]["data_offsets"])
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **dict(tensors)},
                      separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors keeps the data 8-byte aligned
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def save_key_file(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], overwrite: bool = False,
                  private: bool = False) -> Path:
    """Write a key's tensors and metadata as one canonical safetensors file (atomically); refuses to
    replace a file unless `overwrite`. `private`: readable by its owner only (0600)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise LearnlockError(f"{path} already exists; pass overwrite=True to replace it")
    atomic_write_bytes(path, canonical(safetensors.torch.save(tensors, metadata=metadata)), private=private)
    return path


def read_key_file(path, what: str, expected: str, *, format: str, required: tuple[str, ...] = (),
                  other_formats: dict[str, str] | None = None, fix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a key file whose metadata says `format` and holds every `required`
    entry; `what` names the file in errors ("NetSpec file"), `expected` says what should be there,
    `other_formats` maps a format it may be confused with to why it is not this one, and `fix` is
    appended to the message of a damaged file."""
    path = Path(path)
    if not path.is_file():
        raise LearnlockError(f"{what} {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    data = path.read_bytes()
    try:
        tensors = safetensors.torch.load(data)
        meta = header(data).get("__metadata__") or {}
    except (SafetensorError, AssertionError, KeyError, ValueError, TypeError, RuntimeError,
            struct.error) as e:  # what safetensors raises on damaged headers or data
        raise LearnlockError(f"{path} is not a readable safetensors file ({e}); expected {expected}") from None
    found = meta.get("format")
    if found != format:
        family = format.split("/")[0]
        hint = ((other_formats or {}).get(found)
                or (f"it has format {found!r}, which this learnlock cannot read; upgrade learnlock"
                    if str(found).startswith(f"{family}/") else f"its metadata lacks format={format!r}"))
        raise LearnlockError(f"{path} is not a learnlock {what}: {hint}")
    missing = [k for k in required if k not in meta]
    if missing:
        raise LearnlockError(f"{path}: {what.removesuffix(' file')} metadata lacks {', '.join(missing)}; "
                             f"the file is damaged{fix}")
    return tensors, meta


def read_format(path) -> str | None:
    """The "format" metadata of a learnlock safetensors file, or None when it cannot be read
    (the loaders then give the precise error)."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100_000_000:
                return None
            meta = json.loads(f.read(n)).get("__metadata__") or {}
        return meta.get("format") if isinstance(meta, dict) else None
    except (OSError, struct.error, ValueError, AttributeError):
        return None
