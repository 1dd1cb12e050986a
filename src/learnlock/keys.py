"""The authorized network is a key: architecture + initial weights, from a NetSpec file, a seed
or a secret pass phrase (hashed into a seed). A Learnability Lock key (`LockKey`) adds the
class-wise transforms its holder inverts before training; `load_key` reads either file."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from .data.manifest import verify
from .errors import LearnlockError
from .lockkey import FORMAT as LOCK_FORMAT
from .lockkey import LockKey, read_format
from .models import NetSpec, list_models


# scrypt (RFC 7914) at N = 2**14, r = 8: 16 MiB and about 50 ms per guess on one CPU core, and
# the memory makes GPU guessing costly; the manifest publishes the keyed network's fingerprint, so a
# pass phrase must resist offline guessing. Keys made before 2026-12 used one sha256 ("sha256").
SCRYPT = {"kdf": "scrypt", "n": 2 ** 14, "r": 8, "p": 1}
DEFAULT_SALT = "6c6561726e6c6f636b2e6b65792d73656564"  # "learnlock.key-seed": only where no salt is given


def new_derivation() -> dict:
    """How a new key is derived from its pass phrase: scrypt with a fresh random 16-byte salt. It is
    public (recorded in the manifest); without it the pass phrase does not give the key back."""
    return {**SCRYPT, "salt": secrets.token_hex(16)}


def seed_from_secret(secret: str, derivation: dict | None = None) -> int:
    """A 63-bit init seed from a pass phrase, so the key never has to be stored: scrypt with the
    `derivation`'s salt and cost (default: SCRYPT with a fixed salt), or {"kdf": "sha256"}, the
    one hash of keys made before scrypt (kept so their pass phrases still give the same key)."""
    if not secret:
        raise LearnlockError("the key secret is empty; give a pass phrase")
    d = derivation or {**SCRYPT, "salt": DEFAULT_SALT}
    if d.get("kdf") == "sha256":
        return int.from_bytes(hashlib.sha256(secret.encode()).digest()[:8], "big") >> 1
    try:
        if d.get("kdf") != "scrypt":
            raise ValueError(f"unknown kdf {d.get('kdf')!r}")
        n, r, p = int(d["n"]), int(d["r"]), int(d["p"])
        raw = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(d["salt"]), n=n, r=r, p=p,
                             maxmem=256 * r * n + (1 << 20), dklen=8)
    except (KeyError, TypeError, ValueError) as e:
        raise LearnlockError(f"cannot derive the key from the pass phrase with {d} ({e}); the recorded "
                             "derivation is damaged") from None
    return int.from_bytes(raw, "big") >> 1


def resolve_key(spec: str, num_classes: int, in_channels: int, seed: int | None = None,
                secret: str | None = None, derivation: dict | None = None) -> NetSpec:
    """`spec` is a NetSpec .safetensors file, or an architecture name with `seed` or `secret`
    (derived as `derivation` says, see `seed_from_secret`)."""
    path = Path(spec)
    if spec.endswith(".safetensors") or path.exists():
        key = NetSpec.load(path)
    else:
        if spec not in list_models():
            raise LearnlockError(
                f"`authorized` {spec!r} is neither a NetSpec .safetensors file nor a model name "
                f"({', '.join(list_models())})"
            )
        if (seed is None) == (secret is None):
            raise LearnlockError(
                f"`authorized` {spec}: give exactly one of `key_seed` or `key_secret` to derive "
                "its initial weights"
            )
        key = NetSpec.create(spec, num_classes, in_channels, seed=seed if seed is not None else seed_from_secret(secret, derivation))
    if key.num_classes != num_classes or key.in_channels != in_channels:
        raise LearnlockError(
            f"authorized network {key.arch} ({key.fingerprint[:12]}) takes {key.in_channels}-channel images "
            f"and {key.num_classes} classes, but the data have {in_channels} channels and {num_classes} classes"
        )
    return key


def load_key(path):
    """Read an authorized key file: a NetSpec (keyed networks included) or a LockKey, by the
    file's "format" metadata. Either has `fingerprint`, `build()` and `prepare(data)`, the data the
    key's holder trains on (a LockKey unlocks them; a NetSpec trains on them as published)."""
    readers = {LOCK_FORMAT: LockKey.load}
    return readers.get(read_format(path), NetSpec.load)(path)  # NetSpec.load names any other problem


def check_key_matches(key: NetSpec | LockKey, manifest: dict) -> int:
    """Index of `key` among the manifest's authorized networks; a clear error if it is not one."""
    auth = manifest.get("authorized") or {}
    prints = [n["fingerprint"] for n in auth.get("networks", [])]
    if not prints:
        raise LearnlockError(f"this published dataset ({manifest.get('method')}) names no authorized network")
    if key.fingerprint not in prints:
        raise LearnlockError(
            f"wrong key: {key.arch} {key.fingerprint[:12]}... is not an authorized network of this dataset "
            f"(authorized: {', '.join(p[:12] for p in prints)})"
        )
    verify(manifest, key, "the published dataset's manifest")
    return prints.index(key.fingerprint)


def check_key_specs(specs: list[str] | None = None, archs: list[str] | None = None, seeds: list[int] | None = None,
                    key_seed: int | None = None, key_secret: str | None = None) -> None:
    """What `authorized_keys` can refuse before the data are loaded: names that are neither a
    key file nor a model, a name without exactly one of seed or secret, an empty secret."""
    for a in archs or []:
        if a not in list_models():
            raise LearnlockError(f"`authorized_arch` {a!r} is not a model name ({', '.join(list_models())})")
    for spec in specs or []:
        if spec.endswith(".safetensors") or Path(spec).exists():
            load_key(spec)  # a small file: a wrong one fails now, not after the data are loaded
            continue
        if spec not in list_models():
            raise LearnlockError(f"`authorized` {spec!r} is neither a NetSpec .safetensors file nor a model name "
                                 f"({', '.join(list_models())})")
        if (key_seed is None) == (key_secret is None):
            raise LearnlockError(f"`authorized` {spec}: give exactly one of `key_seed` or `key_secret` to derive "
                                 "its initial weights")
        if key_secret is not None:
            seed_from_secret(key_secret)  # refuses an empty pass phrase


def check_key_out(key_out, out, source_spec: str | None = None) -> None:
    """Refuse, before any work, a `key_out` that is the output folder or inside it (the key would
    be written first and the output then refused), inside the source data, or an existing file
    that is not a learnlock key (never overwritten, never read as an input)."""
    from .data.outdir import check_writable, source_path

    if not key_out:
        return
    path, out = Path(key_out), Path(out)
    if path.resolve() == out.resolve() or path.resolve().is_relative_to(out.resolve()):
        raise LearnlockError(f"`key_out` {path} is the published folder `out` or inside it; the key must be a file "
                             "of its own beside the data (e.g. OUT.key.safetensors); choose another `key_out`")
    src = source_path(source_spec or "")
    if src is not None and (path.resolve() == src.resolve() or path.resolve().is_relative_to(src.resolve())):
        raise LearnlockError(f"{path} is inside the source dataset {src}; never writing into the input; "
                             "choose another `key_out`")
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise LearnlockError(f"`key_out` {path} is a folder; give a file name such as {path}/key.safetensors")
        try:
            load_key(path)
        except LearnlockError:
            raise LearnlockError(f"`key_out` {path} exists and is not a learnlock key file; it is never overwritten; "
                                 "choose another `key_out`") from None
    check_writable(path, "key_out")


def authorized_keys(num_classes: int, in_channels: int, specs: list[str] | None = None,
                    archs: list[str] | None = None, seeds: list[int] | None = None,
                    key_seed: int | None = None, key_secret: str | None = None,
                    derivation: dict | None = None) -> list[tuple[NetSpec, bool]]:
    """The authorized networks of a protection, each as (key, derived): `specs` are key files or
    architecture names (one --key-seed / --key-secret for all), or `archs` x `seeds` pair up
    (one of them may be a single value, repeated). `derived` is True when the key was made here
    and its file must be handed to the user."""
    if specs and archs:
        raise LearnlockError("give the authorized networks either with `authorized` or with "
                             "`authorized_arch`/`authorized_seeds`, not both")
    if archs:
        seeds = list(seeds or [])
        if not seeds:
            raise LearnlockError("`authorized_arch` needs `authorized_seeds` (the init seed of each network)")
        if len(archs) == 1:
            archs = archs * len(seeds)
        elif len(seeds) == 1:
            seeds = seeds * len(archs)
        if len(archs) != len(seeds):
            raise LearnlockError(f"`authorized_arch` names {len(archs)} networks but `authorized_seeds` gives "
                                 f"{len(seeds)} seeds; give one seed per network (or one for all)")
        out = [(resolve_key(a, num_classes, in_channels, seed=s), True) for a, s in zip(archs, seeds)]
    else:
        out = [(resolve_key(s, num_classes, in_channels, key_seed, key_secret, derivation), not Path(s).exists())
               for s in specs or []]
    prints = [k.fingerprint for k, _ in out]
    dup = sorted({p[:12] for p in prints if prints.count(p) > 1})
    if dup:
        raise LearnlockError(f"the same authorized network is given twice (fingerprint {', '.join(dup)}); "
                             "give each network its own seed, secret or key file")
    return out


def key_paths(issued: list, given: set[str], key_out, out: Path, source=None) -> dict[Path, int]:
    """Where each issued key the user does not already hold (`given` fingerprints) goes: `key_out`
    (default OUT.key.safetensors; OUT.key0/1... for several). Refused before any work: a path inside
    the source data, one that cannot be written, or a file that holds another key."""
    from .data.outdir import source_path

    paths = {}
    src = source_path(source.source if source is not None else "")
    for i, key in enumerate(issued):
        if key.fingerprint in given:
            continue
        path = Path(key_out or f"{out}.key.safetensors")
        if len(issued) > 1:
            path = path.with_name(f"{path.stem}{i}{path.suffix}")
        if src is not None and (path.resolve() == src.resolve() or path.resolve().is_relative_to(src.resolve())):
            raise LearnlockError(f"{path} is inside the source dataset {src}; never writing into the input; "
                                 "choose another `key_out`")
        check_key_out(path, out)
        # a key trained by the method (lock) has no fingerprint yet: any existing file is another key
        if path.exists() and (not key.fingerprint or load_key(path).fingerprint != key.fingerprint):
            raise LearnlockError(f"{path} exists and holds another key; choose another `key_out`")
        paths[path] = i
    return paths


def write_key_files(issued: list, paths: dict[Path, int]) -> list[Path]:
    """Save each key of `paths` (atomically; an identical file already there is kept). Keys whose
    fingerprint is known go first, before the long protection; a key the method trains goes last."""
    written = []
    for path, i in paths.items():
        key = issued[i]
        if key.fingerprint and not path.exists():
            key.save(path, private=True)  # the secret: its owner only
        written.append(path)
    return written
