"""`keyed`: an authorized network with a built-in blind spot: a frozen, secret key layer
(`learnlock.keys.layers`) in front of an ordinary architecture. The "keyed" model is registered
here, with the other models (`create_model("keyed", ...)`), once `learnlock.keys` is imported
(`import learnlock` does).

The key is still "an architecture with its initial weights": the key layer's buffers are part of
the weights (so the NetSpec fingerprint covers them), derived from the key's secret and never
trained (they are buffers, not parameters). The public settings (base, family, its settings) are
in the NetSpec kwargs; the secret subspace lives only in the weights.

    spec = keyed_spec(NetSpec.create("cnn", 10, 3, seed=1234), family="colour")
    model = spec.build()          # KeyedNet: model.layer (frozen) then model.net
"""

from __future__ import annotations

import hashlib

from torch import nn

from ..errors import LearnlockError
from ..models import create_model, register_model
from ..models.netspec import NetSpec
from .layers import KeyLayer, create_key_layer


class KeyedNet(nn.Module):
    """The key layer, then the network."""

    def __init__(self, layer: KeyLayer, net: nn.Module):
        super().__init__()
        # registered under the name "key": the state-dict names "key.*" are in every keyed key file
        # and its fingerprint, so they stay; the attribute to use is `layer`
        self.add_module("key", layer)
        self.net = net

    @property
    def layer(self) -> KeyLayer:
        return self._modules["key"]

    def forward(self, x):
        return self.net(self.layer(x))


@register_model("keyed")
def keyed(num_classes: int, in_channels: int = 3, base: str = "cnn", family: str = "auto",
          image_size: int = 32, base_kwargs: dict | None = None, key_settings: dict | None = None) -> nn.Module:
    if base == "keyed":
        raise LearnlockError("a keyed network cannot wrap another keyed network")
    key_settings = dict(key_settings or {})
    if family == "auto":  # colour keys need RGB images
        family = "colour" if in_channels == 3 else "spectral"
    layer = create_key_layer(family, in_channels, image_size, **key_settings)
    return KeyedNet(layer, create_model(base, num_classes, in_channels, **dict(base_kwargs or {})))


def layer_seed(base_fingerprint: str, family: str, key_settings: dict) -> int:
    """The key layer's seed, from the base network's fingerprint (itself derived from the secret)."""
    text = f"learnlock.keyed/1|{base_fingerprint}|{family}|{sorted(key_settings.items())}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def keyed_spec(base, family: str, image_size: int, key_settings: dict | None = None):
    """The keyed NetSpec of a plain NetSpec `base`: its weights, behind a key layer of `family`
    whose buffers are seeded by the base's fingerprint (so the secret that made `base` makes the key)."""
    key_settings = dict(key_settings or {})
    if base.arch == "keyed":
        raise LearnlockError("this network already has a key layer")
    layer = create_key_layer(family, base.in_channels, image_size,
                             seed=layer_seed(base.fingerprint, family, key_settings), **key_settings)
    state = {f"key.{k}": v.detach().clone() for k, v in layer.state_dict().items()}
    state.update({f"net.{k}": v for k, v in base.state.items()})
    kwargs = {"base": base.arch, "family": family, "image_size": image_size, "base_kwargs": base.kwargs,
              "key_settings": layer.public_settings()}
    return NetSpec("keyed", base.num_classes, base.in_channels, kwargs, state)


def key_layer_of(model_or_spec) -> KeyLayer:
    """The key layer of a keyed network (a KeyedNet or a keyed NetSpec)."""
    model = model_or_spec.build() if hasattr(model_or_spec, "build") else model_or_spec
    if not isinstance(model, KeyedNet):
        raise LearnlockError(f"not a keyed network ({type(model).__name__}): it has no key layer")
    return model.layer
