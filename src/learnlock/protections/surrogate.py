"""Surrogate networks that protections train on the clean data (UGE's authorized runs and
surrogates, TAP's target model), cached in the protection's work folder so a resumed run does
not train them again. States are safetensors, never pickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..files import atomic_write_bytes
from ..models import NetSpec
from ..callbacks import Trajectory
from ..recipe import Recipe
from ..training import fit


def alternate_rounds(start: int, max_rounds: int, step, stop, log: list, save, desc: str, progress: bool) -> bool:
    """The alternating optimisation loop of min-min style protections (em and its kin, lock):
    `step(r)` runs round r and returns the surrogate's accuracy, appended to `log`; the loop ends
    once `stop(accuracy)` holds (also for the last logged round of a resumed run) or after
    `max_rounds`; `save(done)` checkpoints after every round (a resumable.Checkpoint). Returns whether it converged."""
    converged = bool(log) and stop(log[-1]["accuracy"])
    bar = tqdm(total=max_rounds, initial=start, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for r in range(start, max_rounds):
            if converged:
                break
            acc = step(r)
            log.append({"round": r + 1, "accuracy": round(acc, 5)})
            converged = stop(acc)
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.3f}")
            if save:
                save(r + 1)
    finally:
        bar.close()
    return converged


def save_states(path: Path, states: list[dict[str, torch.Tensor]], meta: dict) -> None:
    flat = {f"{i}/{k}": v.contiguous() for i, st in enumerate(states) for k, v in st.items()}
    atomic_write_bytes(path, save(flat, metadata={"meta": json.dumps(meta)}))


def load_states(path: Path) -> tuple[list[dict[str, torch.Tensor]], dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    flat = load_file(str(path))
    states: list[dict] = [dict() for _ in range(meta["count"])]
    for key, v in flat.items():
        i, name = key.split("/", 1)
        states[int(i)][name] = v
    return states, meta


def train_cached(workdir: Path | None, name: str, spec: NetSpec, data: ImageDataset, recipe: Recipe,
                 every_steps: int = 0, progress: bool = True):
    """Train `spec` on clean `data` keeping its trajectory; reuse workdir/name.safetensors if there."""
    path = workdir / f"{name}.safetensors" if workdir else None
    ident = {"fingerprint": spec.fingerprint, "recipe": recipe.to_dict(), "every_steps": every_steps,
             "data": data.fingerprint()}
    if path and path.exists():
        states, meta = load_states(path)
        if meta.get("ident") == ident:
            return meta["steps"], states
    traj = Trajectory(every_steps=every_steps or None)
    fit(spec.build(), data, recipe, callbacks=[traj], progress=progress, desc=f"{name} (clean run)")
    if path:
        save_states(path, traj.states, {"count": len(traj.states), "steps": traj.steps, "ident": ident})
    return traj.steps, traj.states


def model_from(spec: NetSpec, state: dict) -> nn.Module:
    m = spec.build()
    m.load_state_dict(state)
    return m.eval()
