"""Deriving and checking keys: the authorized network is architecture + initial weights, from a
key file, a seed or a secret pass phrase (hashed into a seed); `check_key_matches` says whether a
key is one a published dataset names."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from ..data.manifest import verify
from ..errors import LearnlockError
from ..models import NetSpec, list_models
from . import Key, load_key


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
    (derived as `derivation` says, see `seed_from_secret`). Whether the key fits the data is
    `key.check_fits(data)`, asked where the data are."""
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
    return key


def check_key_matches(key: Key, manifest: dict) -> int:
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
