"""Hacker scenarios and countermeasures by name; each returns a model trained on published data.

    model = get_attack("distill")().train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                                          context=AttackContext(teacher=authorized_model))
"""

from ..registry import Registry

ATTACKS = Registry("attack")
register_attack = ATTACKS.register


def list_attacks() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str):
    return ATTACKS.get(name)


from .base import Attack, AttackContext  # noqa: E402
from . import distill, retrain  # noqa: E402,F401

__all__ = ["ATTACKS", "Attack", "AttackContext", "get_attack", "list_attacks", "register_attack"]
