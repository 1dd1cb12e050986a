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
images (no augmentation) is read. The candidate with the lowest training accuracy is kept (ties,
e.g. several at chance, go to the highest training loss), and
the hacker trains behind it, as the authorized network does with the true key.

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
from ..keylayers import LUMA_AXIS, KeyLayer
from ..models import create_model, list_models
from ..models.keyed import KeyedNet
from ..training import fit, predict
from . import register_attack
from .key_estimate import KeyEstimate, KeyEstimateSettings


def cone_grid(luma: float, steps: int) -> torch.Tensor:
    """3 x steps unit vectors at squared cosine `luma` with the luma axis, evenly spaced in azimuth."""
    basis = torch.linalg.qr(torch.stack([LUMA_AXIS, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                                         torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)], 1))[0][:, 1:]
    phi = torch.arange(steps, dtype=torch.float64) * (2 * math.pi / steps)
    ring = torch.stack([phi.cos(), phi.sin()])
    return math.sqrt(luma) * LUMA_AXIS[:, None] + math.sqrt(1 - luma) * (basis @ ring)


def half_sphere_grid(steps: int) -> torch.Tensor:
    """3 x steps near-uniform unit vectors on the half sphere z >= 0 (a Fibonacci grid; a direction
    and its negative remove the same colour, so half the sphere is all of it)."""
    i = torch.arange(steps, dtype=torch.float64) + 0.5
    z = 1 - i / steps                    # uniform in (0, 1]: equal areas on the half sphere
    r = (1 - z ** 2).clamp_min(0).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z])


@dataclass(frozen=True)
class KeySearchSettings(KeyEstimateSettings):
    candidates: int = 36        # candidate keys (azimuths on the cone, or points on the half sphere)
    search_epochs: int = 2      # epochs each candidate trains
    search_net: str = "cnn"     # the architecture trained behind each candidate
    use_aux: bool = False       # no clean data in this threat model (kept for the shared base)

    def check(self):
        super().check()
        self.require(isinstance(self.candidates, int) and not isinstance(self.candidates, bool)
                     and self.candidates >= 2, f"candidates must be an integer >= 2, got {self.candidates!r}")
        self.require(isinstance(self.search_epochs, int) and self.search_epochs >= 1,
                     f"search_epochs must be an integer >= 1, got {self.search_epochs!r}")
        self.require(self.search_net in list_models() and self.search_net != "keyed",
                     f"search_net must be a plain architecture, one of {list_models()}; got {self.search_net!r}")
        self.require(not self.use_aux, "key-search uses no clean data (use key-estimate for an attacker with aux)")


@register_attack("key-search")
class KeySearch(KeyEstimate):
    Settings = KeySearchSettings

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.search: dict | None = None

    def candidate_vectors(self, like: KeyLayer) -> torch.Tensor:
        if like.family != "colour":
            raise LearnlockError(f"key-search searches colour keys (one direction per pixel); the scheme's family "
                                 f"is {like.family!r}: use key-estimate for it")
        if like.dims != 1:
            raise LearnlockError(f"key-search searches one removed colour direction; this key removes {like.dims}")
        n = self.settings.candidates
        return cone_grid(like.luma, n) if like.luma is not None else half_sphere_grid(n)

    def transform(self, data, context):
        like = self.scheme(data, context)
        vectors = self.candidate_vectors(like)
        recipe = replace(context_recipe(self), epochs=self.settings.search_epochs)
        start = time.perf_counter()
        accs, losses = [], []
        for j in range(vectors.shape[1]):
            layer = copy.deepcopy(like).eval()
            layer.basis.copy_(vectors[:, j:j + 1].float())
            net = create_model(self.settings.search_net, data.num_classes, data.in_channels, seed=recipe.seed)
            model = fit(KeyedNet(layer, net), data, recipe, progress=False, desc=f"key-search {j}")
            logits = predict(model, data)
            accs.append(float((logits.argmax(1) == data.labels).float().mean()))
            losses.append(float(F.cross_entropy(logits, data.labels)))
        # learned slowest: the lowest training accuracy; ties (e.g. several at chance) go to the higher loss
        best = min(range(len(accs)), key=lambda j: (accs[j], -losses[j]))
        self.estimate = copy.deepcopy(like).eval()
        self.estimate.basis.copy_(vectors[:, best:best + 1].float())
        self.search = {"candidates": vectors.shape[1], "grid": "cone" if like.luma is not None else "half sphere",
                       "train_accuracy": [round(a, 4) for a in accs],
                       "train_loss": [round(v, 4) for v in losses], "chosen": best,
                       "seconds": round(time.perf_counter() - start, 1)}
        teacher = context.teacher
        self.agreement = None
        if isinstance(teacher, KeyedNet):
            true = copy.deepcopy(teacher.key).cpu()
            self.agreement = true.agreement(self.estimate)
            if getattr(true, "family", "") == "colour" and true.dims == 1:
                self.search["abs_cos_with_true_key"] = round(abs(float(true.basis[:, 0] @ self.estimate.basis[:, 0])), 6)
        return data

    def train(self, published, arch, seed, recipe, context=None, progress=True):
        self._recipe = replace(recipe, seed=seed)   # the search trains with the attack's recipe and seed
        return super().train(published, arch, seed, recipe, context, progress)

    def report(self):
        out = super().report()
        return None if out is None else {**out, **(self.search or {})}


def context_recipe(attack: KeySearch):
    """The recipe the search trains with: the one `train` was called with, else the cpu recipe."""
    from ..training import get_recipe

    return getattr(attack, "_recipe", None) or get_recipe("cpu")
