"""`key-estimate`: an attacker who knows the `keyed` scheme (the key family and its public
settings, which the manifest states) but not the key estimates the blind spot S from the
published images, puts the estimated key layer in front of its own network and trains, exactly
as the authorized network does with the true key.

The estimate is second-order: the noise adds variance inside S, so S shows as the directions in
which the published images vary more than natural images do (per-pixel high-pass colour
covariance for `colour`, per-frequency colour covariance for `spectral`: see each family's
`estimate`). The natural reference is a clean auxiliary split when one is given (`--aux`,
`use_aux`), else a prior (correlated colour channels; neighbouring frequencies).

`report()` gives the agreement tr(P_S P_est) / dim S between the estimate and the true key when
the trained authorized network is at hand (1: S fully found, ~dim S_est / dim: chance).

    attack = create_attack("key-estimate")
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(scheme=manifest_key, aux=clean_aux))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from ..data import ImageDataset
from ..errors import LearnlockError
from ..keys.layers import KeyLayer, create_key_layer, list_key_layers
from ..models import create_model
from ..keys.keyed import KeyedNet
from ..training import fit
from . import register_attack
from .base import Attack, AttackContext, AttackSettings


@dataclass(frozen=True)
class KeyEstimateSettings(AttackSettings):
    family: str = "auto"    # key family; auto: the one the published manifest names
    use_aux: bool = True    # use the clean auxiliary split as the natural reference when given

    def check(self):
        self.require(self.family == "auto" or self.family in list_key_layers(),
                     f"family must be auto or one of {list_key_layers()}, got {self.family!r}")


@register_attack("key-estimate")
class KeyEstimate(Attack):
    Settings = KeyEstimateSettings
    presets = {"smoke": {}}  # the defaults already run in seconds

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        self.estimate: KeyLayer | None = None
        self.agreement: float | None = None

    def uses_aux(self) -> bool:
        return self.settings.use_aux

    def assumptions(self, facts: dict) -> list[str]:
        aux = facts.get("aux_size") if self.settings.use_aux else None
        return [*super().assumptions(facts), "the key scheme (family and public settings, from the manifest)",
                f"{aux} clean auxiliary images as the natural reference" if aux else "no clean data (a prior)"]

    def scheme(self, data: ImageDataset, context: AttackContext) -> KeyLayer:
        """A key layer of the published scheme (family + public settings): the shape of the guess."""
        scheme = context.scheme or {}
        family = self.settings.family if self.settings.family != "auto" else scheme.get("family")
        if not family:
            raise LearnlockError(f"{self.name} needs the key family: the published manifest names none "
                                 "(not a keyed dataset?); set the attack's setting family=colour or family=spectral")
        settings = scheme.get("settings", {}) if scheme.get("family") == family else {}
        return create_key_layer(family, data.in_channels, data.images.shape[-1], seed=0, **settings)

    def transform(self, data, context):
        like = self.scheme(data, context)
        ref = context.aux.images if (context.aux is not None and self.settings.use_aux) else None
        self.estimate = type(like).estimate(data.images, ref, like).eval()
        teacher = context.teacher
        if isinstance(teacher, KeyedNet):  # the true key is known: say how much of it was found
            self.agreement = copy.deepcopy(teacher.layer).cpu().agreement(self.estimate)  # the teacher stays put
        return data

    def train_on(self, data, arch, seed, recipe, context, progress=True, callbacks=()):
        if self.estimate is None:
            raise LearnlockError("key-estimate: call transform (or train) first")
        net = create_model(arch, data.num_classes, data.in_channels, seed=seed)
        model = KeyedNet(self.estimate, net)
        # behind its estimate the attacker trains as the authorized user does: with the augmentations
        # the family's key layer commutes with (a mosaic key: flips only; block: shifts by k), else a
        # shifted image would carry the noise past the estimated blind spot
        recipe = type(self.estimate).authorized_recipe(recipe, self.estimate.public_settings())
        return fit(model, data, replace(recipe, seed=seed), callbacks=callbacks, progress=progress,
                   desc=f"{self.name} {arch} seed {seed}")

    def report(self) -> dict | None:
        if self.estimate is None:
            return None
        return {"family": self.estimate.family, "agreement_with_true_key": self.agreement}
