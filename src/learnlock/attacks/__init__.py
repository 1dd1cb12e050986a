"""Hacker scenarios and countermeasures by name; each returns a model trained on published data.

    model = get_attack("distill")().train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                                          context=AttackContext(teacher=authorized_model))
"""

from .base import ATTACKS, Attack, AttackContext, AttackSettings


def register_attack(name: str):
    """Class decorator: ATTACKS.register (which sets `name`), and `label` defaults to the name."""

    def deco(cls):
        cls.label = cls.__dict__.get("label") or name
        return ATTACKS.register(name)(cls)

    return deco


list_attacks = ATTACKS.names
get_attack = ATTACKS.get
create_attack = ATTACKS.create  # create_attack("iss-jpeg", quality=10): the attack with checked settings

from . import (adversarial_training, augment, distill, distill_proxy, iss, key_estimate, key_search,  # noqa: E402,F401
               key_search_gradient,
               leaked_pairs, lock_inverse, orthogonal_projection, purify, recover, retrain, ueraser)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackSettings", "create_attack", "get_attack",
           "list_attacks", "register_attack"]
