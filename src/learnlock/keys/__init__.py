"""The key: what the authorized user receives, and everything that makes or checks one.

A key is one file. Two kinds exist, both `Key`s: a `NetSpec` (an architecture with its exact
initial weights; a `keyed` network's frozen key layer is part of those weights) and a `LockKey`
(Learnability Lock: a NetSpec plus the class-wise transforms its holder inverts).

    key = load_key("pub.key.safetensors")      # either kind, by the file's format
    key.check_fits(data)                       # the data's channels and classes
    model = fit(key.build(), key.prepare(data), recipe)

Layout: `resolve.py` derives keys from a seed or a pass phrase and checks them against a
manifest; `lock.py` is the LockKey; `keyed.py` the keyed network (it registers the "keyed"
model); `layers/` its key layers. NetSpec lives in models/ (surrogates, certify and federated use
it as a plain network too); the file helpers both kinds share are in learnlock/files.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from ..data import ImageDataset
from ..errors import LearnlockError
from ..files import read_format
from ..models.netspec import NetSpec
from .lock import FORMAT as LOCK_FORMAT
from .lock import LockKey


@runtime_checkable
class Key(Protocol):
    """What every key offers (NetSpec and LockKey): identity, the network, the data its holder
    trains on, and one canonical file."""

    arch: str
    num_classes: int
    in_channels: int

    @property
    def fingerprint(self) -> str:
        """sha256 hex of everything in the key; public (manifests name keys by it)."""

    def build(self) -> nn.Module:
        """A fresh authorized network holding exactly the key's initial weights."""

    def prepare(self, data: ImageDataset) -> ImageDataset:
        """The data the key's holder trains on (a LockKey unlocks them; a NetSpec keeps them)."""

    def check_fits(self, data: ImageDataset, role: str = "authorized network") -> None:
        """Refuse data of another channel count or class count than the key takes."""

    def weights(self) -> dict[str, Tensor]:
        """Every secret tensor (the manifest's MAC is keyed by them)."""

    def save(self, path, overwrite: bool = False, private: bool = False) -> Path:
        """Write the key file (atomically, byte-canonical)."""

    @classmethod
    def load(cls, path, expected_fingerprint: str | None = None) -> Key:
        """Read and check a file written by `save`."""


def load_key(path) -> Key:
    """Read an authorized key file: a NetSpec (keyed networks included) or a LockKey, by the
    file's "format" metadata."""
    readers = {LOCK_FORMAT: LockKey.load}
    return readers.get(read_format(path), NetSpec.load)(path)  # NetSpec.load names any other problem


# after Key and load_key, which resolve.py imports back
from . import keyed  # noqa: E402,F401  (registers the "keyed" model)
from .resolve import (  # noqa: E402
    SCRYPT, authorized_keys, check_key_matches, check_key_specs, new_derivation, resolve_key, seed_from_secret,
)



def wrong_key(key: Key, seed: int) -> NetSpec:
    """A wrong key: what an attacker who knows the scheme but not the secret builds. The same
    architecture from init seed `seed`; for a keyed network the same base architecture and key
    family with its public settings, so its key layer comes from another secret."""
    if isinstance(key, LockKey):
        raise LearnlockError("a wrong key is built for network keys (NetSpec); a Learnability Lock key has none")
    if key.arch == "keyed":
        kw = key.kwargs
        base = NetSpec.create(kw["base"], key.num_classes, key.in_channels, seed=seed, **kw.get("base_kwargs", {}))
        spec = keyed.keyed_spec(base, kw["family"], kw["image_size"], kw["key_settings"])
    else:
        spec = NetSpec.create(key.arch, key.num_classes, key.in_channels, seed=seed, **key.kwargs)
    if spec.fingerprint == key.fingerprint:
        raise LearnlockError(f"seed {seed} rebuilds the authorized key itself; choose another wrong-key seed")
    return spec


__all__ = ["Key", "LockKey", "NetSpec", "SCRYPT", "authorized_keys", "check_key_matches", "check_key_specs",
           "load_key", "new_derivation", "resolve_key", "seed_from_secret", "wrong_key"]
