"""NetSpec: an architecture plus its exact weights, saved as one fingerprinted safetensors file.

A protection is often tuned for (or a result claimed on) one specific network: the
architecture, its arguments and its initial weights. NetSpec pins all of that down and names it
by a sha256 fingerprint, so a later run can check it trains the network it was meant to.

    spec = NetSpec.create("resnet18", num_classes=10, seed=0)
    spec.save("init.safetensors")
    same = NetSpec.load("init.safetensors", expected_fingerprint=spec.fingerprint)
    model = same.build()                      # nn.Module holding exactly those weights

File format: a safetensors file (tensors named as in the state_dict) whose string metadata
holds "format" = "learnlock.netspec/1", "arch", "num_classes", "in_channels", "kwargs" (JSON)
and "fingerprint". The file bytes depend only on the spec: saving it twice, or saving what was
loaded, gives identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import LearnlockError
from ..files import fingerprint, read_key_file, save_key_file
from . import MODELS, check_args, create_model

FORMAT = "learnlock.netspec/1"
_META_KEYS = ("arch", "num_classes", "in_channels", "kwargs", "fingerprint")


@dataclass(eq=False)  # tensors make == ambiguous; compare fingerprints instead
class NetSpec:
    """Architecture name + constructor arguments + state_dict (CPU tensors).

    Validated on construction: the arguments must be accepted by the architecture and `state`
    must have exactly its keys, shapes and dtypes. `kwargs` must be JSON-serialisable (it is
    stored as JSON, and normalised through JSON here so a loaded spec equals the saved one).
    """

    arch: str
    num_classes: int
    in_channels: int
    kwargs: dict
    state: dict[str, Tensor] = field(repr=False)  # state_dict; millions of numbers

    def __post_init__(self):
        if not isinstance(self.kwargs, dict):
            raise LearnlockError(f"NetSpec kwargs must be a dict, got {type(self.kwargs).__name__}")
        try:
            self.kwargs = json.loads(json.dumps(self.kwargs, sort_keys=True))
        except (TypeError, ValueError) as e:
            raise LearnlockError(
                f"NetSpec kwargs must be JSON-serialisable (numbers, strings, lists): {e}"
            ) from None
        check_args(self.arch, self.num_classes, self.in_channels, self.kwargs)
        self._check_state()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(cls, arch: str, num_classes: int, in_channels: int = 3, seed: int = 0,
               **kwargs) -> NetSpec:
        """The spec of create_model(arch, num_classes, in_channels, seed=seed, **kwargs)."""
        model = create_model(arch, num_classes, in_channels, seed=seed, **kwargs)
        return cls.from_model(arch, model, num_classes, in_channels, kwargs)

    @classmethod
    def from_model(cls, arch: str, model: nn.Module, num_classes: int, in_channels: int,
                   kwargs: dict | None = None) -> NetSpec:
        """Snapshot `model` (built as create_model(arch, num_classes, in_channels, **kwargs))."""
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        return cls(arch, num_classes, in_channels, dict(kwargs or {}), state)

    def build(self) -> nn.Module:
        """A fresh model (train mode, CPU) holding exactly these weights."""
        # seed=0 only keeps the global RNG untouched: every weight is overwritten below.
        model = create_model(self.arch, self.num_classes, self.in_channels, seed=0, **self.kwargs)
        model.load_state_dict(self.state, strict=True)
        return model

    def prepare(self, data):
        """The data the holder of this key trains on: the published data as they are (a LockKey
        inverts its transform here); `scenarios.train_authorized`, the one path that trains a key's
        network, calls `fit(key.build(), key.prepare(data))`."""
        return data

    # -- identity --------------------------------------------------------------------------

    def weights(self) -> dict[str, Tensor]:
        """Every tensor of the key (its secret part; see data/manifest.py)."""
        return dict(self.state)

    def check_fits(self, data, role: str = "authorized network") -> None:
        """Refuse data of another channel count or class count than this network takes."""
        check_fits(self, data, role)

    @property
    def fingerprint(self) -> str:
        """sha256 hex of arch, arguments and each tensor's name, dtype, shape and bytes."""
        return _fingerprint(self.arch, self.num_classes, self.in_channels, self.kwargs, self.state)

    # -- files -----------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False, private: bool = False) -> Path:
        """Write one safetensors file (atomically); refuses to replace a file unless overwrite.
        `private`: readable by its owner only (0600), for a key that must stay secret."""
        tensors = {k: self.state[k].detach().cpu().contiguous().clone() for k in sorted(self.state)}
        metadata = {
            "format": FORMAT,
            "arch": self.arch,
            "num_classes": str(self.num_classes),
            "in_channels": str(self.in_channels),
            "kwargs": json.dumps(self.kwargs, sort_keys=True),
            "fingerprint": self.fingerprint,
        }
        return save_key_file(path, tensors, metadata, overwrite, private)

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str | None = None) -> NetSpec:
        """Read a file written by save(); check its fingerprint (and the expected one, if given)."""
        path = Path(path)
        state, meta = read_key_file(path, "NetSpec file", "a NetSpec written by NetSpec.save", format=FORMAT,
                                    required=_META_KEYS, fix=", re-save it with NetSpec.save")
        try:
            num_classes, in_channels = int(meta["num_classes"]), int(meta["in_channels"])
            kwargs = json.loads(meta["kwargs"])
            if not isinstance(kwargs, dict):
                raise ValueError("kwargs is not a JSON object")
        except ValueError as e:
            raise LearnlockError(
                f"{path}: corrupt NetSpec metadata ({e}); re-save it with NetSpec.save"
            ) from None
        arch = meta["arch"]
        if arch not in MODELS:
            raise LearnlockError(
                f"{path}: unknown model {arch!r}; this learnlock has: {', '.join(MODELS.names())}"
            )
        actual = _fingerprint(arch, num_classes, in_channels, kwargs, state)
        if actual != meta["fingerprint"]:
            raise LearnlockError(
                f"{path}: fingerprint mismatch (recorded {meta['fingerprint']}, contents hash to "
                f"{actual}): the file was modified or corrupted after it was saved"
            )
        if expected_fingerprint is not None and actual != str(expected_fingerprint).lower():
            raise LearnlockError(
                f"{path}: fingerprint {actual} differs from the expected {expected_fingerprint}: "
                "this is not the authorized network you expected"
            )
        try:
            return cls(arch, num_classes, in_channels, kwargs, state)
        except LearnlockError as e:
            raise LearnlockError(f"{path}: {e}") from None

    # -- helpers ---------------------------------------------------------------------------

    def _check_state(self) -> None:
        """Raise unless `state` has exactly the architecture's keys, shapes and dtypes."""
        # Building on the meta device allocates nothing and draws no random numbers.
        with torch.device("meta"):
            want = MODELS.get(self.arch)(self.num_classes, self.in_channels, **self.kwargs)
        want = want.state_dict()
        what = f"{self.arch}(num_classes={self.num_classes}, in_channels={self.in_channels})"
        for key in sorted(set(want) | set(self.state)):
            got, need = self.state.get(key), want.get(key)
            if need is None:
                raise LearnlockError(f"state has {key!r}, which {what} does not have")
            if got is None:
                raise LearnlockError(f"state lacks {key!r}, which {what} needs")
            if not isinstance(got, Tensor):
                raise LearnlockError(f"state {key!r} is a {type(got).__name__}, not a tensor")
            if got.shape != need.shape or got.dtype != need.dtype:
                raise LearnlockError(
                    f"state {key!r} is {got.dtype} {tuple(got.shape)} but {what} needs "
                    f"{need.dtype} {tuple(need.shape)}"
                )


def check_fits(key, data, role: str) -> None:
    """One message for a key (NetSpec or LockKey) that does not fit `data` (an ImageDataset)."""
    if key.num_classes != data.num_classes or key.in_channels != data.in_channels:
        raise LearnlockError(
            f"{role} {key.arch} ({key.fingerprint[:12]}) takes {key.in_channels}-channel images and "
            f"{key.num_classes} classes, but {data.source or 'the data'} has {data.in_channels} channels and "
            f"{data.num_classes} classes; use a key made for this dataset"
        )


def _fingerprint(arch: str, num_classes: int, in_channels: int, kwargs: dict,
                 state: dict[str, Tensor]) -> str:
    head = {"arch": arch, "num_classes": num_classes, "in_channels": in_channels, "kwargs": kwargs}
    return fingerprint([json.dumps(head, sort_keys=True, separators=(",", ":")).encode()], state)
