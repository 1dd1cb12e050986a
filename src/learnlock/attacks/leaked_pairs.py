"""`leaked-pairs`: an attacker holding the clean originals of k published images (issue 23).

Threat model: the attacker holds the published images and labels, knows the `keyed` scheme (the
manifest's family and public settings), and has k clean originals of published items
(AttackContext.originals, matched to the published set by item id: e.g. photos the owner also
posted unprotected). For the colour key the change published - original lies in the secret
colour subspace at every pixel (up to the export's clipping and 8-bit rounding), so one pair
fixes the direction: the key estimate is the top `dims` eigenvectors of the per-pixel colour
second moment of the differences, sum_pixels d d^T. The hacker then trains behind the estimated
key layer, as the authorized network does with the true key.

For the block key the change lies in the secret patch subspace in every block: the estimate is the
top eigenvectors of the block-aligned patch second moment of the differences (within the scheme's
even and odd candidates). Spectral keys are not read from changes yet (for Learnability Lock's class-wise affine maps, two pairs
per class fix the key: not done here). `report()` gives the pairs used and, when the trained
authorized network is at hand, the agreement with the true key (|cos| for one direction).

    attack = create_attack("leaked-pairs", k=1)
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(scheme=manifest["extra"]["key"], originals=clean_subset))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..errors import LearnlockError
from ..keys.keyed import KeyedNet
from . import register_attack
from .key_estimate import KeyEstimate, KeyEstimateSettings


@dataclass(frozen=True)
class LeakedPairsSettings(KeyEstimateSettings):
    k: int = 1                  # leaked (published, original) pairs used
    use_aux: bool = False       # no clean data besides the k originals

    def check(self):
        super().check()
        self.require(self.k >= 1,
                     f"k is a count of leaked pairs, an integer >= 1; got {self.k!r}")


@register_attack("leaked-pairs")
class LeakedPairs(KeyEstimate):
    Settings = LeakedPairsSettings
    presets = {"smoke": {}}  # the defaults already run in seconds
    needs = ("originals",)

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.pairs: list[str] | None = None
        self.abs_cos: float | None = None

    def assumptions(self, facts: dict) -> list[str]:
        return ["the published images and labels", "the key scheme (family and public settings, from the manifest)",
                f"{self.settings.k} leaked (published, original) pair{'s' if self.settings.k != 1 else ''}"]

    def transform(self, data, context):
        like = self.scheme(data, context)
        if not type(like).reads_changes():
            raise LearnlockError(f"leaked-pairs cannot read a {like.family!r} key from changes yet (it reads colour "
                                 "and block keys)")
        where = {item: i for i, item in enumerate(data.ids)}
        common = sorted(i for i in context.originals.ids if i in where)
        if len(common) < self.settings.k:
            raise LearnlockError(f"leaked-pairs: k={self.settings.k} pairs asked, but only {len(common)} of the "
                                 f"originals' ids are published items")
        self.pairs = common[:self.settings.k]
        orig_at = {item: i for i, item in enumerate(context.originals.ids)}
        pub = data.images[[where[i] for i in self.pairs]].double()
        orig = context.originals.images[[orig_at[i] for i in self.pairs]].double()
        if pub.shape != orig.shape:
            raise LearnlockError(f"leaked-pairs: originals have shape {tuple(orig.shape[1:])}, published images "
                                 f"{tuple(pub.shape[1:])}")
        if torch.equal(pub, orig):
            raise LearnlockError("leaked-pairs: the originals equal the published images (no change to read a key from)")
        self.estimate = type(like).from_changes((pub - orig) / 255, like).eval()
        self.agreement = self.abs_cos = None
        if isinstance(context.teacher, KeyedNet):
            true = copy.deepcopy(context.teacher.layer).cpu()
            self.agreement = true.agreement(self.estimate)
            if getattr(true, "family", "") == "colour" and true.dims == 1:
                self.abs_cos = round(abs(float(true.basis[:, 0] @ self.estimate.basis[:, 0])), 6)
        return data

    def report(self):
        out = super().report()
        return None if out is None else {**out, "pairs": self.pairs, "abs_cos_with_true_key": self.abs_cos}
