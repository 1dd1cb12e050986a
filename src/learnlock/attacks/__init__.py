"""Hacker scenarios and countermeasures by name; each returns a model trained on published data.

    model = get_attack("distill")().train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                                          context=AttackContext(teacher=authorized_model))
"""

from ..registry import Registry

ATTACKS = Registry("attack")


def register_attack(name: str):
    """Class decorator: register an Attack subclass under `name` (and set its `name`)."""

    def deco(cls):
        cls.name = name
        cls.label = cls.__dict__.get("label") or name
        return ATTACKS.register(name)(cls)

    return deco


def list_attacks() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str):
    return ATTACKS.get(name)


def create_attack(name: str, **settings):
    """`create_attack("iss-jpeg", quality=10)`: the attack by name, built with its settings."""
    return get_attack(name)(**settings)


from .base import Attack, AttackContext, AttackSettings  # noqa: E402
from . import (adversarial_training, augment, distill, distill_proxy, iss, key_estimate, key_search,  # noqa: E402,F401
               leaked_pairs, lock_inverse, orthogonal_projection, purify, recover, retrain, ueraser)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackSettings", "create_attack", "get_attack",
           "list_attacks", "register_attack"]
