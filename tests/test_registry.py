"""The one registry and factory of every family: names set on registration, unknown settings
refused once with the known ones named."""

from __future__ import annotations

import dataclasses

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


WRONG = {"int": [True, 2.5, "3"], "float": [True, "0.1", float("nan"), float("inf")], "bool": [1, "yes"],
         "str": [3, None]}


@pytest.mark.parametrize("registry", [PROTECTIONS, ATTACKS], ids=lambda r: r.family)
def test_every_settings_field_refuses_a_value_of_another_type(registry):
    """Each method's `check` states only ranges; a value of the wrong type (a bool for a count, a
    string for a number, a float that is not finite) must be refused with the field named, not
    reach a comparison that raises TypeError or a loop that runs nan times."""
    tried = 0
    for name in registry.names():
        Settings = registry.get(name).Settings
        for f in dataclasses.fields(Settings):
            for bad in WRONG.get(f.type if isinstance(f.type, str) else f.type.__name__, []):
                with pytest.raises(LearnlockError, match=rf"\b{f.name}\b"):
                    Settings(**{f.name: bad})
                tried += 1
    assert tried > 20
