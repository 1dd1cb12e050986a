"""Numbers that say whether a protection can work, measured on the data it produced.

`diagnose` gives UGE's two: the selectivity of its gradient matching and the strength of its
shortcut; `linear_probe` is the shortcut test (also used by the federated client probe).

    d = diagnose(data, x_u, runs, recipe, seed=0)   # dict of floats, written to the manifest
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset
from .losses import gradient_matching_loss
from .models import create_model
from .callbacks import state_copy
from .recipe import Recipe


def diagnose(data: ImageDataset, x_u: torch.Tensor, runs: list, recipe: Recipe, seed: int = 0,
             probe: int = 256) -> dict:
    """The two numbers that say whether UGE can work (see shared notes):
    selectivity: gradient cosine clean-vs-protected at the authorized checkpoints minus the same
    at other initialisations of the same architecture (hacker proxies), on a probe batch;
    shortcut strength: test accuracy of a linear probe trained on delta alone (half / half).
    `runs` are UGE's AuthorizedRun (spec, model, states)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:probe]
    dev = x_u.device
    x, xu, y = data.float_images()[idx].to(dev), x_u[idx.to(dev)], data.labels[idx].to(dev)
    auth, other = [], []
    for r in runs:
        pick = sorted({round(i * (len(r.states) - 1) / 3) for i in range(4)})  # 4 spread checkpoints
        for st in [r.states[i] for i in pick]:
            auth.append(1 - gradient_matching_loss(r.model, st, x, xu, y).item())
        for k in range(3):
            m = create_model(r.spec.arch, data.num_classes, data.in_channels, seed=seed + 31 + k,
                             **r.spec.kwargs).to(dev)
            other.append(1 - gradient_matching_loss(m, state_copy(m), x, xu, y).item())
    delta = (x_u.cpu() - data.float_images()).flatten(1)
    half = len(delta) // 2
    perm = torch.randperm(len(delta), generator=g)
    tr, te = perm[:half], perm[half:]
    probe_acc = linear_probe(delta[tr], data.labels[tr], delta[te], data.labels[te], data.num_classes, seed=seed)
    return {"grad_cos_authorized": sum(auth) / len(auth), "grad_cos_other_inits": sum(other) / len(other),
            "selectivity_gap": sum(auth) / len(auth) - sum(other) / len(other),
            "delta_linear_probe_acc": probe_acc, "mean_abs_delta_255": float(delta.abs().mean() * 255)}


def linear_probe(xtr, ytr, xte, yte, k, steps=200, seed: int = 0) -> float:
    """Multinomial logistic regression (LBFGS) on standardised inputs; test accuracy.
    The layer's initial weights come from `seed`, never the global RNG, so a run is repeatable."""
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
        torch.random.default_generator.manual_seed(seed)
        lin = nn.Linear(xtr.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), ytr) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return (lin(xte).argmax(1) == yte).float().mean().item()
