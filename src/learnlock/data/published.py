"""The published-dataset format every protection in learnlock writes, and its loader.

Layout (one folder, written atomically):

    DIR/manifest.json                  what was done, to what, with which settings (see below)
    DIR/images/<class>/<stem>.png      8-bit lossless PNG, mode L (1 channel) or RGB (3 channels)
    DIR/<name>                         optional extra files (e.g. authorized.safetensors)

`<stem>` is the source item's file stem ("airplane/0038.jpg" -> "0038"; index id "17" -> "17"),
so every published image can be matched back to its source item. The manifest lists the items
in the source order with their source id, label, the sha256 of the PNG bytes and whether the
item was protected; it holds no timestamps, so the same input gives byte-identical output.

    out = write_published("pub", clean, x_q, method="random", rho=8/255, settings={}, seed=0)
    ds = load_dataset("published:pub")     # verified pixels, source ids, training split only
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import LearnlockError
from ..provenance import provenance
from . import register_dataset
from .base import ImageDataset, per_class_index
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, authenticate, unverified, validate_manifest
from .outdir import check_out_dir, check_writable, source_path

IMAGES = "images"
PNG_COMPRESS_LEVEL = 6  # fixed so the bytes do not depend on Pillow's default


# ----------------------------------------------------------------------------- helpers


def png_bytes(image: np.ndarray) -> bytes:
    """Deterministic PNG bytes of one H x W x C uint8 image (C = 1 -> mode L, C = 3 -> RGB).

    Same pixels -> same bytes: no optimize pass, a fixed compression level, no metadata.
    """
    arr = np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_stem(item_id: str) -> str:
    """File stem of a source id: "airplane/0038.jpg" -> "0038", "17" -> "17"."""
    return PurePosixPath(str(item_id)).stem


def _check_component(name: str, what: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise LearnlockError(
            f"{what} {name!r} cannot be used as a file or folder name; rename it "
            "(no '/', '\\', empty, '.' or '..')"
        )


def _json_bytes(obj: Any, what: str) -> bytes:
    try:
        return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise LearnlockError(f"{what} cannot be stored as JSON ({e}); use plain numbers, strings, lists and dicts") from None


def _make_temp_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        try:
            os.mkdir(tmp)  # default permissions (umask), unlike mkdtemp's 0700
            return tmp
        except FileExistsError:
            continue


# ----------------------------------------------------------------------------- writing


def write_published(
    out_dir,
    source: ImageDataset,
    images: torch.Tensor,
    *,
    method: str,
    rho: float | None,
    settings: dict,
    seed: int | None,
    authorized: dict | None = None,
    protected: list[int] | None = None,
    extra: dict | None = None,
    files: dict[str, bytes] | None = None,
    overwrite: bool = False,
    keys=(),
) -> Path:
    """Write `images` (uint8, same shape and order as `source.images`) as a published dataset.

    `protected` lists the indices of the items that were changed (None: all of them).
    `authorized` (arch, kwargs, fingerprint, recipe) is filled by the caller; `files` maps
    extra file names to bytes written beside the manifest. The manifest is authenticated for each
    of `keys` (the authorized keys; see data/manifest.py). Everything is written into a
    temporary sibling folder and renamed to `out_dir` only when complete.
    """
    out = check_out_dir(out_dir, overwrite, source=source)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise LearnlockError(
            f"published images must be a uint8 tensor, got {getattr(images, 'dtype', type(images).__name__)}; "
            "quantize with project_quantize first"
        )
    if tuple(images.shape) != tuple(source.images.shape):
        raise LearnlockError(
            f"published images have shape {tuple(images.shape)}, expected the source's {tuple(source.images.shape)}"
        )
    n = len(source)
    if n == 0:
        raise LearnlockError(f"{source.source or 'dataset'} has no items; nothing to publish")
    if protected is None:
        flags = [True] * n
    else:
        flags = [False] * n
        for i in protected:
            i = int(i)
            if not 0 <= i < n:
                raise LearnlockError(f"protected index {i} is outside [0, {n - 1}]")
            flags[i] = True
    for c in source.classes:
        _check_component(str(c), "class name")

    rels, seen = [], {}
    labels = source.labels.tolist()
    for i, (item_id, label) in enumerate(zip(source.ids, labels)):
        stem = item_stem(item_id)
        _check_component(stem, f"item {item_id!r}: file stem")
        rel = f"{IMAGES}/{source.classes[label]}/{stem}.png"
        if rel in seen:
            raise LearnlockError(
                f"items {seen[rel]!r} and {item_id!r} would both be published as {rel}; "
                "rename one of them (same class, same file stem)"
            )
        seen[rel] = item_id
        rels.append(rel)

    files = dict(files or {})
    for name, data in files.items():
        _check_component(name, "extra file name")
        if name in (MANIFEST, IMAGES):
            raise LearnlockError(f"extra file name {name!r} is reserved; choose another name")
        if not isinstance(data, (bytes, bytearray)):
            raise LearnlockError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
    # fail on unserializable metadata before encoding any image
    _json_bytes({"settings": settings, "authorized": authorized, "extra": extra or {}}, "manifest settings/authorized/extra")

    arr = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    tmp = _make_temp_dir(out)
    try:
        for c in source.classes:
            (tmp / IMAGES / str(c)).mkdir(parents=True, exist_ok=True)
        items = []
        for i, rel in enumerate(rels):
            data = png_bytes(arr[i])
            with open(tmp / rel, "wb") as f:
                f.write(data)
            items.append({
                "file": rel,
                "source_id": source.ids[i],
                "label": labels[i],
                "sha256": sha256(data),
                "protected": flags[i],
            })
        listed = []
        for name in sorted(files):
            data = bytes(files[name])
            with open(tmp / name, "wb") as f:
                f.write(data)
            listed.append({"file": name, "sha256": sha256(data)})
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": method,
            "rho": None if rho is None else float(rho),
            "settings": settings,
            "seed": seed,
            "source": {"spec": source.source, "size": n, "shape": list(source.images.shape[1:])},
            "classes": list(source.classes),
            "items": items,
            "protected_fraction": sum(flags) / n,
            "authorized": authorized,
            "extra": extra or {},
            "files": listed,
            **provenance(),
        }
        validate_manifest(manifest, "the manifest to write", FORMAT_VERSION)  # what readers will require
        manifest = authenticate(manifest, keys)
        with open(tmp / MANIFEST, "wb") as f:
            f.write(_json_bytes(manifest, "manifest"))
            f.flush()
            os.fsync(f.fileno())
        _move_into_place(tmp, out)
    except OSError as e:  # a full disk, a quota, permissions changed under us
        shutil.rmtree(tmp, ignore_errors=True)
        raise LearnlockError(f"cannot write the published dataset to {out} ({e.strerror or e}); nothing was "
                             "published: free some space or choose another `out`") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    os.rename(out, old)  # the old folder is only removed once the new one is in place
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- reading


def read_manifest(path) -> dict:
    """The parsed manifest of published dataset folder `path`, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise LearnlockError(f"published dataset {path} does not exist")
    if not path.is_dir():
        raise LearnlockError(f"published dataset {path} is not a folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise LearnlockError(f"{mpath} is missing; {path} is not a learnlock published dataset")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise LearnlockError(f"{mpath} is not valid JSON ({e}); the published dataset is damaged, publish it again") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise LearnlockError(f"{mpath} has format {fmt!r}, expected {FORMAT!r}; not a learnlock published dataset")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LearnlockError(f"{mpath}: format_version {version!r} is not a positive integer; the manifest is damaged")
    if version > FORMAT_VERSION:
        raise LearnlockError(
            f"{mpath} has format_version {version}, newer than this learnlock reads ({FORMAT_VERSION}); upgrade learnlock"
        )
    return validate_manifest(manifest, mpath, version)


def published_fingerprint(manifest: dict) -> str:
    """sha256 of a published dataset's manifest (its canonical JSON, without the authentication
    block): the manifest lists every file's sha256, label and setting, so equal fingerprints are the
    same published data. Every scenario records it in its result JSON; `learnlock report` finds the
    runs of a published dataset by it."""
    body = {k: v for k, v in manifest.items() if k != "authentication"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def _read_verified(path: Path, rel: str, digest: str) -> bytes:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise LearnlockError(f"{path / MANIFEST}: item file {rel!r} points outside the dataset; the manifest is damaged")
    try:
        data = (path / rel).read_bytes()
    except FileNotFoundError:
        raise LearnlockError(f"{path / rel} is missing; the published dataset is not intact") from None
    except OSError as e:
        raise LearnlockError(f"{path / rel}: cannot read ({e.strerror or e}); the published dataset is not intact") from None
    if sha256(data) != digest:
        raise LearnlockError(f"{path / rel}: sha256 mismatch, the file was modified; the published dataset is not intact")
    return data


def load_published(path, per_class: int | None = None, seed: int = 0) -> tuple[ImageDataset, dict]:
    """(dataset, manifest) of a published folder; every file's sha256 is verified.

    The dataset's ids are the SOURCE ids, its source string is "published:PATH".
    `per_class` keeps a seeded subset of N items per class (same choice as `ds.per_class`).
    """
    path = Path(path)
    manifest = read_manifest(path)
    classes = tuple(manifest["classes"])
    shape = manifest["source"]["shape"]
    items = manifest["items"]
    labels = [it["label"] for it in items]
    for extra in manifest.get("files") or []:
        _read_verified(path, extra["file"], extra["sha256"])

    keep = range(len(items))
    if per_class:
        keep = per_class_index(labels, classes, per_class, seed, str(path)).tolist()
    c, h, w = shape
    out = np.empty((len(keep), h, w, c), dtype=np.uint8)
    for j, i in enumerate(keep):
        rel = items[i]["file"]
        data = _read_verified(path, rel, items[i]["sha256"])
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise LearnlockError(f"{path / rel}: not a readable PNG ({e}); the published dataset is not intact") from None
        if mode != ("L" if c == 1 else "RGB") or arr.shape[:2] != (h, w):
            raise LearnlockError(
                f"{path / rel} is {mode} {arr.shape[1]}x{arr.shape[0]}, the manifest says "
                f"{c} channel(s) {w}x{h}; the published dataset is not intact"
            )
        out[j] = arr.reshape(h, w, c)
    ds = ImageDataset(
        images=torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor([labels[i] for i in keep], dtype=torch.int64),
        classes=classes,
        ids=tuple(items[i]["source_id"] for i in keep),
        source=f"published:{path}",
    )
    return ds, manifest


@register_dataset("published")
def load_published_dataset(arg, split, per_class=None, seed=0) -> ImageDataset:
    if not arg:
        raise LearnlockError("published dataset needs a path: published:DIR")
    if split != "train":
        raise LearnlockError("a published dataset is a training set; evaluate on the clean test split of its source")
    ds, manifest = load_published(arg, per_class=per_class, seed=seed)
    unverified(manifest, Path(arg) / MANIFEST)  # a spec carries no key
    return ds


__all__ = [
    "FORMAT", "FORMAT_VERSION", "check_out_dir", "check_writable", "write_published", "read_manifest",
    "load_published", "published_fingerprint", "png_bytes", "item_stem", "source_path",
]
