"""`key-search`: a search for the key by learnability itself (issue 23).

Threat model: the attacker holds the published images and labels and knows the `keyed` scheme
(the manifest states the family and its public settings: for the colour family the number of
removed directions and the luma share), but has NO clean data, no leaked originals and no
access to the authorized network. The noise is an error-minimising shortcut that lies in the
key's blind spot S, so removing the true S removes the shortcut: under the true key the published
data are learned slowest.

For each candidate key consistent with the scheme (colour, one direction: with a stated luma
share, `candidates` azimuths evenly spaced on the cone at that squared cosine with the luma axis;
without one, `candidates` near-uniform directions on the half sphere, a Fibonacci grid), a
`search_net` behind the candidate key layer trains `search_epochs` epochs on the published data
(the attack's recipe, same init for every candidate), and its training accuracy on the published
images (no augmentation) is read. The candidate with the lowest training accuracy is kept (where
several tie within PLATEAU of it, e.g. at chance, the centre of the tied ones); then `refine` rounds of local search
halve the step around it (on the cone: the azimuth +- half the grid step; on the sphere: the
direction tilted +- half a step along two tangents), each keeping the slowest-learned (centre).
The hacker trains behind the final candidate, as the authorized network does with the true key.

The search trains with batch `search_batch` (default 32): the signal needs optimiser steps, not
epochs (measured at 1,000 images: 2 epochs at the cpu recipe's batch 128, 16 steps, chose a
candidate at |cos| 0.82 with the true key and 6 epochs one at 0.93, although the grid's nearest
candidate is at 0.9996).

`report()` gives every candidate's training accuracy, the search time, and the agreement with
the true key (|cos| for one direction; tr(P_S P_est) / dim S in general) when the trained
authorized network is at hand (AttackContext.teacher, a KeyedNet).

Cost: candidates x search_epochs epochs of search_net on the published set (36 x 2 epochs of
`cnn` on 1,000 CIFAR images: a few minutes on 2 CPU cores).

    attack = create_attack("key-search", candidates=36, search_epochs=2)
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(scheme=manifest["extra"]["key"]))
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..errors import LearnlockError
from ..keys.layers import LUMA_AXIS, KeyLayer, cone_ring
from ..models import create_model, list_models
from ..keys.keyed import KeyedNet
from ..recipe import get_recipe
from ..training import fit, predict
from . import register_attack
from .key_estimate import KeyEstimate, KeyEstimateSettings


PLATEAU = 0.01   # candidates within this training accuracy of the lowest count as tied


def half_sphere_grid(steps: int) -> torch.Tensor:
    """3 x steps near-uniform unit vectors on the half sphere z >= 0 (a Fibonacci grid; a direction
    and its negative remove the same colour, so half the sphere is all of it)."""
    i = torch.arange(steps, dtype=torch.float64) + 0.5
    z = 1 - i / steps                    # uniform in (0, 1]: equal areas on the half sphere
    r = (1 - z ** 2).clamp_min(0).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z])


@dataclass(frozen=True)
class SearchSettings(KeyEstimateSettings):
    """What every search by learnability shares: a plain network trained behind each candidate,
    and no clean data (an attacker with aux images has key-estimate)."""
    search_epochs: int = 2      # epochs each candidate trains
    search_net: str = "cnn"     # the architecture trained behind each candidate
    use_aux: bool = False       # no clean data in this threat model (kept for the shared base)

    def check(self):
        super().check()
        self.require(self.search_epochs >= 1, f"search_epochs must be >= 1, got {self.search_epochs!r}")
        self.require(self.search_net in list_models() and self.search_net != "keyed",
                     f"search_net must be a plain architecture, one of {list_models()}; got {self.search_net!r}")
        self.require(not self.use_aux, "a key search uses no clean data (use key-estimate for an attacker with aux)")


@dataclass(frozen=True)
class KeySearchSettings(SearchSettings):
    candidates: int = 36        # candidate keys (azimuths on the cone, or points on the half sphere)
    search_batch: int = 32      # batch size of the search's training (more steps per epoch)
    refine: int = 4             # rounds of local search around the best grid candidate

    def check(self):
        super().check()
        self.require(self.candidates >= 2, f"candidates must be >= 2, got {self.candidates!r}")
        self.require(self.search_batch >= 1, f"search_batch must be >= 1, got {self.search_batch!r}")
        self.require(self.refine >= 0, f"refine must be >= 0 (rounds of local search), got {self.refine!r}")


class Search(KeyEstimate):
    """A key search by learnability: it trains with the recipe and seed `train` was given (the cpu
    recipe when called through `transform` alone) and adds what it found to key-estimate's report.
    It searches one removed direction per position, for the key families in `families`."""

    families: tuple[str, ...] = ("colour",)

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.search: dict | None = None
        self.recipe = None

    @classmethod
    def applies_to(cls, scheme):
        scheme = scheme or {}
        return (scheme.get("family") in (None, *cls.families)
                and (scheme.get("settings") or {}).get("dims", 1) == 1)

    def search_recipe(self):
        return self.recipe or get_recipe("cpu")

    def train(self, published, arch, seed, recipe, context=None, progress=True):
        self.recipe = replace(recipe, seed=seed)
        return super().train(published, arch, seed, recipe, context, progress)

    def report(self):
        out = super().report()
        return None if out is None else {**out, **(self.search or {})}


@register_attack("key-search")
class KeySearch(Search):
    """The grid search, over the one removed direction of a colour key."""
    Settings = KeySearchSettings
    presets = {"smoke": dict(candidates=4, search_epochs=1, refine=0)}

    def candidate_vectors(self, like: KeyLayer) -> torch.Tensor:
        if like.family != "colour":
            raise LearnlockError(f"key-search searches colour keys (one direction per pixel); the scheme's family "
                                 f"is {like.family!r}: use key-estimate for it")
        if like.dims != 1:
            raise LearnlockError(f"key-search searches one removed colour direction; this key removes {like.dims}")
        n = self.settings.candidates
        return cone_ring(like.luma, n) if like.luma is not None else half_sphere_grid(n)

    @staticmethod
    def centre(like: KeyLayer, tried: list, accs: list) -> torch.Tensor:
        """The unit vector (float64) at the centre of the candidates whose training accuracy is within
        PLATEAU of the lowest: their sign-aligned mean, put back on the stated cone."""
        low = min(accs)
        best = tried[accs.index(low)]
        vs = [tried[i] if float(tried[i] @ best) >= 0 else -tried[i] for i, a in enumerate(accs) if a <= low + PLATEAU]
        v = torch.stack(vs).sum(0)
        if like.luma is not None:
            off = v - (v @ LUMA_AXIS) * LUMA_AXIS
            v = math.sqrt(like.luma) * LUMA_AXIS + math.sqrt(1 - like.luma) * off / off.norm().clamp_min(1e-12)
        return v / v.norm()

    def neighbours(self, like: KeyLayer, v: torch.Tensor, step: float) -> torch.Tensor:
        """3 x m candidates around the unit vector v: on the stated cone, v turned by +-step in
        azimuth about the luma axis; on the sphere, v tilted by +-step along two tangents."""
        if like.luma is not None:
            axis = LUMA_AXIS
            along, off = (v @ axis) * axis, v - (v @ axis) * axis
            u = off / off.norm()
            w = torch.linalg.cross(axis, u)
            r = off.norm()
            return torch.stack([along + r * (math.cos(s) * u + math.sin(s) * w) for s in (step, -step)], 1)
        t1 = torch.linalg.qr(torch.stack([v, torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                                          torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)], 1))[0][:, 1:]
        out = [math.cos(step) * v + math.sin(step) * sgn * t1[:, k] for k in (0, 1) for sgn in (1, -1)]
        return torch.stack(out, 1)

    def transform(self, data, context):
        like = self.scheme(data, context)
        vectors = self.candidate_vectors(like)
        recipe = replace(self.search_recipe(), epochs=self.settings.search_epochs, batch_size=self.settings.search_batch)
        start = time.perf_counter()
        tried, accs, losses = [], [], []

        def score(v: torch.Tensor) -> None:
            layer = copy.deepcopy(like).eval()
            layer.basis.copy_(v[:, None].float())
            net = create_model(self.settings.search_net, data.num_classes, data.in_channels, seed=recipe.seed)
            model = fit(KeyedNet(layer, net), data, recipe, progress=False, desc=f"key-search {len(tried)}")
            logits = predict(model, data)
            tried.append(v)
            accs.append(float((logits.argmax(1) == data.labels).float().mean()))
            losses.append(float(F.cross_entropy(logits, data.labels)))

        # learned slowest: the lowest training accuracy. Where several candidates tie near the minimum
        # (a plateau, e.g. at chance), the key is at the plateau's centre, not at its noisiest loss.
        for j in range(vectors.shape[1]):
            score(vectors[:, j])
        grid_best = self.centre(like, tried, accs)
        best = grid_best
        step = (2 * math.pi / vectors.shape[1]) / 2 if like.luma is not None else math.sqrt(2 * math.pi / vectors.shape[1]) / 2
        for _ in range(self.settings.refine):
            for v in self.neighbours(like, best, step).T:
                score(v)
            best = self.centre(like, tried, accs)
            step /= 2
        self.estimate = copy.deepcopy(like).eval()
        self.estimate.basis.copy_(best[:, None].float())
        self.search = {"candidates": vectors.shape[1], "grid": "cone" if like.luma is not None else "half sphere",
                       "refine_rounds": self.settings.refine, "trainings": len(tried),
                       "train_accuracy": [round(a, 4) for a in accs],
                       "train_loss": [round(v, 4) for v in losses],
                       "seconds": round(time.perf_counter() - start, 1)}
        teacher = context.teacher
        self.agreement = None
        if isinstance(teacher, KeyedNet):
            true = copy.deepcopy(teacher.layer).cpu()
            self.agreement = true.agreement(self.estimate)
            if getattr(true, "family", "") == "colour" and true.dims == 1:
                b = true.basis[:, 0].double()
                self.search["abs_cos_with_true_key"] = round(abs(float(b @ best)), 6)
                self.search["abs_cos_grid_choice"] = round(abs(float(b @ grid_best)), 6)
                self.search["abs_cos_best_grid_candidate"] = round(float((b @ vectors).abs().max()), 6)
        return data
