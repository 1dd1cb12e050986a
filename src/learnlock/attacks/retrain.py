"""`retrain`: train any zoo architecture from scratch on the published data (UGE's "Normal")."""

from . import register_attack
from .base import Attack


@register_attack("retrain")
class Retrain(Attack):
    presets = {"smoke": {}}  # the defaults already run in seconds
    label = "Normal"
