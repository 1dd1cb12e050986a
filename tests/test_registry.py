"""The one registry and factory of every family: names set on registration, unknown settings
refused once with the known ones named."""

from __future__ import annotations

import pytest

from learnlock.attacks import ATTACKS, create_attack
from learnlock.data import DATASETS
from learnlock.encoders import ENCODERS
from learnlock.errors import LearnlockError
from learnlock.keys.layers import KEY_LAYERS, create_key_layer
from learnlock.models import MODELS
from learnlock.protections import PROTECTIONS, create_protection
from learnlock.registry import Registry

FAMILIES = [DATASETS, MODELS, PROTECTIONS, ATTACKS, KEY_LAYERS, ENCODERS]


@pytest.mark.parametrize("registry", FAMILIES, ids=lambda r: r.family)
def test_register_sets_the_name(registry):
    for name in registry.names():
        assert registry.get(name).name == name


@pytest.mark.parametrize("registry,name,fields", [
    (PROTECTIONS, "random", ("rho", "seed", "fraction", "classwise", "patch")),
    (MODELS, "cnn", ("width",)),
    (KEY_LAYERS, "colour", ("dims", "luma")),
    (ENCODERS, "efficientnet-lite0", ("resolution", "device")),
])
def test_settings_are_the_dataclass_fields_or_the_signature(registry, name, fields):
    assert registry.settings(name) == fields


def test_create_refuses_unknown_settings_naming_the_known_ones():
    with pytest.raises(LearnlockError, match=r"protection 'random': unknown setting\(s\) epochz; valid settings: "
                                             "rho, seed, fraction, classwise, patch"):
        create_protection("random", epochz=3)
    with pytest.raises(LearnlockError, match=r"attack 'iss-jpeg': unknown setting\(s\) qualty; valid settings: quality"):
        create_attack("iss-jpeg", qualty=3)
    with pytest.raises(LearnlockError, match=r"key family 'colour': unknown setting\(s\) k; valid settings: dims, luma"):
        create_key_layer("colour", 3, 8, k=2)
    assert create_protection("random", preset=None, rho=4 / 255).settings.rho == 4 / 255  # fixed arguments pass


def test_a_family_refuses_the_wrong_kind_and_a_name_twice():
    class Base:
        pass

    class Thing(Base):
        pass

    reg = Registry("thing", kind=Base)
    with pytest.raises(TypeError, match="Base subclass"):
        reg.register("x")(int)
    reg.register("t")(Thing)
    with pytest.raises(RuntimeError, match="registered twice"):
        reg.register("t")(Thing)
