"""The manifest of a published dataset: checked field by field once, where it is read, and
authenticated by the key.

Authentication: `protect` adds to the manifest of a dataset with an authorized network an
HMAC-SHA256 over the whole manifest (and so over every file's sha256, every label and every
setting), keyed by a secret derived from the key's weights, never from its public fingerprint:

    "authentication": {"algorithm": "hmac-sha256", "macs": {"<key fingerprint>": "<hex>"}}

Whoever holds the key can verify (and `train`, `table1` and `audit` do); whoever edits the
manifest without the key cannot make a new code. Nothing dataset-specific is in the key file, so
one key may authorize many datasets (federated clients share one).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import warnings
from pathlib import Path

from ..errors import LearnlockError, LearnlockWarning
from ..recipe import Recipe

FORMAT = "learnlock.published"  # a published dataset's manifest says this in "format"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAC_ALGORITHM = "hmac-sha256"
_SECRET_DOMAIN = b"learnlock.manifest-mac/1\0"  # keeps the secret apart from the (public) fingerprint


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_manifest(m: dict, where, format_version: int) -> dict:
    """Refuse a manifest whose fields are missing or of the wrong kind, naming the field; returns it."""

    def fail(field: str, what: str):
        raise LearnlockError(f"{where}: field {field!r} {what}; the manifest is damaged or was edited by hand, "
                             "get the published dataset again")

    def need(obj: dict, field: str, ok, what: str, path: str = ""):
        if field not in obj:
            fail(path + field, "is missing")
        if not ok(obj[field]):
            fail(path + field, f"must be {what}, got {type(obj[field]).__name__} {str(obj[field])[:40]!r}")
        return obj[field]

    need(m, "method", lambda v: isinstance(v, str), "a string")
    need(m, "rho", lambda v: v is None or _is_number(v), "a number or null")
    need(m, "settings", lambda v: isinstance(v, dict), "an object")
    need(m, "seed", lambda v: v is None or _is_int(v), "an integer or null")
    source = need(m, "source", lambda v: isinstance(v, dict), "an object")
    need(source, "shape", lambda v: isinstance(v, list) and len(v) == 3 and v[0] in (1, 3)
         and all(_is_int(x) and x > 0 for x in v), "[C, H, W] with C 1 or 3", "source.")
    classes = need(m, "classes", lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v),
                   "a non-empty list of class names")
    items = need(m, "items", lambda v: isinstance(v, list) and v, "a non-empty list")
    for i, it in enumerate(items):
        path = f"items[{i}]."
        if not isinstance(it, dict):
            fail(f"items[{i}]", "must be an object")
        for k in ("file", "source_id", "sha256"):
            need(it, k, lambda v: isinstance(v, str) and v, "a non-empty string", path)
        need(it, "label", lambda v: _is_int(v) and 0 <= v < len(classes), f"a class index in [0, {len(classes) - 1}]",
             path)
    need(m, "extra", lambda v: isinstance(v, dict), "an object")
    files = need(m, "files", lambda v: isinstance(v, list), "a list")
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            fail(f"files[{i}]", "must be an object")
        for k in ("file", "sha256"):
            need(f, k, lambda v: isinstance(v, str) and v, "a non-empty string", f"files[{i}].")
    auth = need(m, "authorized", lambda v: v is None or isinstance(v, dict), "an object or null")
    if auth is not None:
        nets = need(auth, "networks", lambda v: isinstance(v, list) and v, "a non-empty list", "authorized.")
        for i, n in enumerate(nets):
            if not isinstance(n, dict):
                fail(f"authorized.networks[{i}]", "must be an object")
            need(n, "fingerprint", lambda v: isinstance(v, str) and len(v) == 64, "a sha256 hex string",
                 f"authorized.networks[{i}].")
            need(n, "arch", lambda v: isinstance(v, str), "a string", f"authorized.networks[{i}].")
        fields = set(Recipe.__dataclass_fields__) | {"device"}  # manifests before 2026-12 named a device
        need(auth, "recipe", lambda v: isinstance(v, dict) and set(v) <= fields,
             f"an object with only the fields {', '.join(sorted(fields))}", "authorized.")
    mac = m.get("authentication")
    if mac is not None and not (isinstance(mac, dict) and mac.get("algorithm") == MAC_ALGORITHM
                                and isinstance(mac.get("macs"), dict)):
        fail("authentication", f"must be {{'algorithm': {MAC_ALGORITHM!r}, 'macs': {{...}}}}")
    return m


def change_bound(manifest: dict, cap: float = 16.0) -> float:
    """Grey levels by which a published item's mean absolute change from its source may go, from
    the norm the manifest records (L-inf radius, L2 radius, L0 pixels), capped at `cap`: enough to
    recognise the source's own images, never so much that unrelated images pass as the same."""
    norm = (manifest.get("extra") or {}).get("norm") or {}
    c, h, w = manifest["source"]["shape"]
    if norm.get("norm") == "l2":
        bound = 255 * norm.get("radius", 0) / (c * h * w) ** 0.5   # mean |d| <= rms |d|
    elif norm.get("norm") == "l0":
        bound = 255 * norm.get("pixels", 1) / (h * w)
    else:
        bound = 255 * (manifest.get("rho") or 0)
    return min(bound, cap) + 0.5


def manifest_recipe(manifest: dict) -> Recipe:
    """The authorized user's training Recipe the manifest names (validated on read)."""
    auth = manifest.get("authorized")
    if not auth:
        raise LearnlockError(f"this published dataset ({manifest.get('method')}) names no authorized network")
    return Recipe(**{k: v for k, v in auth["recipe"].items() if k != "device"})  # the device is chosen per run


def mac_secret(key) -> bytes:
    """The MAC secret of a key (NetSpec or LockKey): a hash of its weights, domain-separated from
    the fingerprint, which is public."""
    h = hashlib.sha256(_SECRET_DOMAIN)
    for name, t in sorted(key.weights().items()):
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


def _signed_bytes(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "authentication"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def mac(manifest: dict, key) -> str:
    return hmac.new(mac_secret(key), _signed_bytes(manifest), hashlib.sha256).hexdigest()


def authenticate(manifest: dict, keys) -> dict:
    """`manifest` with its authentication block for `keys` (the JSON round trip first, so the code
    is over exactly what a reader parses)."""
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "authentication"}, allow_nan=False))
    macs = {k.fingerprint: mac(body, k) for k in keys}
    return {**manifest, "authentication": {"algorithm": MAC_ALGORITHM, "macs": macs}} if macs else manifest


def unverified(manifest: dict, where: str | Path = "the manifest") -> None:
    """Say (a LearnlockWarning) that `manifest` is used without its authentication code checked:
    no key was given, or it carries no code at all. Its files still match their sha256, but its
    labels, settings and file list may have been edited by anyone."""
    if not (manifest.get("authentication") or {}).get("macs"):
        why = ("manifest carries no authentication code" + (" (its authentication block was deleted, or an older "
               "learnlock wrote it)" if manifest.get("authorized") else
               f" ({manifest.get('method')} publishes without a key, so nothing can authenticate it)"))
    else:
        why = "manifest not verified: no key given"
    warnings.warn(f"{where}: {why}; its labels and file list are used unchecked (only a key holder can "
                  "check them)", LearnlockWarning, stacklevel=2)


def verify(manifest: dict, key, where: str | Path = "the manifest") -> None:
    """Refuse a manifest that `key` did not authenticate: edited after publishing, or written
    without an authentication code for this key."""
    macs = (manifest.get("authentication") or {}).get("macs") or {}
    code = macs.get(key.fingerprint)
    if not (isinstance(code, str) and re.fullmatch(r"[0-9a-f]{64}", code)):
        raise LearnlockError(f"{where} carries no authentication code for key {key.fingerprint[:12]}: it was "
                             "written by an older learnlock or edited by hand; publish the dataset again")
    if not hmac.compare_digest(code, mac(manifest, key)):
        raise LearnlockError(f"{where} does not match its authentication code: the manifest was changed after "
                             "publishing (labels, files or settings); do not train on it, get the dataset again "
                             "from its owner")
