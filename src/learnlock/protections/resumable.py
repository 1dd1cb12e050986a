"""The resumable state of a long protection (em and its kin, lock, uge), in one place.

After every round (or epoch) the protection saves what it needs to continue bit for bit: its
tensors, modules and optimizers, the number of rounds done and the log of those rounds. The file
is safetensors (never a pickle), written atomically (a kill mid-write leaves the previous state),
and carries an identity string (settings, data, key): a state written by another run is refused,
never resumed.

    ckpt = Checkpoint(workdir, "em-state", {"settings": ..., "data": data.fingerprint()}, "em")
    done, log = ckpt.restore({"delta": delta, "model": model})   # (0, []) when there is none
    ...
    ckpt.save(done, log, {"delta": delta, "model": model})
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..errors import LearnlockError
from ..files import atomic_write_bytes


class Checkpoint:
    """`workdir/name.safetensors` (nothing at all when `workdir` is None). A part is a tensor
    (restored in place), an optimizer, or anything with state_dict() / load_state_dict() whose
    state is a flat dict of tensors (a module)."""

    def __init__(self, workdir: Path | None, name: str, ident: dict, what: str):
        self.path = Path(workdir) / f"{name}.safetensors" if workdir else None
        self.ident = json.dumps(ident, sort_keys=True)
        self.what = what

    def save(self, done: int, log: list, parts: dict) -> None:
        if self.path is None:
            return
        tensors, meta = {}, {"ident": self.ident, "done": str(done), "log": json.dumps(log)}
        for name, part in parts.items():
            if isinstance(part, torch.Tensor):
                tensors[name] = part.detach().cpu().contiguous()
                continue
            state = part.state_dict()
            if isinstance(part, torch.optim.Optimizer):  # per-parameter tensors + JSON hyper-parameters
                meta[f"{name}/groups"] = json.dumps(state["param_groups"])
                state = {f"{pid}/{k}": torch.as_tensor(v) for pid, st in state["state"].items() for k, v in st.items()}
            tensors.update({f"{name}/{k}": v.detach().cpu().contiguous() for k, v in state.items()})
        atomic_write_bytes(self.path, save(tensors, metadata=meta))

    def restore(self, parts: dict) -> tuple[int, list]:
        """Load a saved state into `parts`; returns (rounds done, their log), (0, []) if none."""
        if self.path is None or not self.path.exists():
            return 0, []
        mismatch = (f"{self.path} holds an interrupted {self.what} run with other settings or data; "
                    "delete it or use another --out to start afresh")
        try:  # a truncated file (a full disk, a copy cut short) must not end in a SafetensorError traceback
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
            if meta.get("ident") != self.ident:
                raise LearnlockError(mismatch)
            tensors = load_file(str(self.path))
        except (SafetensorError, OSError, ValueError) as e:
            raise LearnlockError(f"the resumable state in {self.path.parent} is damaged ({self.path.name}: {e}); "
                                 f"delete the folder {self.path.parent} and rerun to start afresh") from None
        try:
            for name, part in parts.items():
                if isinstance(part, torch.Tensor):
                    with torch.no_grad():
                        part.copy_(tensors[name])
                    continue
                mine = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}/")}
                if isinstance(part, torch.optim.Optimizer):
                    state = {"state": {}, "param_groups": json.loads(meta[f"{name}/groups"])}
                    for key, v in mine.items():
                        pid, k = key.split("/", 1)
                        state["state"].setdefault(int(pid), {})[k] = v
                    mine = state
                part.load_state_dict(mine)
            return int(meta["done"]), json.loads(meta["log"])
        except KeyError as e:  # written by another learnlock version
            raise LearnlockError(f"{mismatch} (no {e} in it)") from None
