"""`retrain`: train any zoo architecture from scratch on the published data (UGE's "Normal")."""

from . import register_attack
from .base import Attack


@register_attack("retrain")
class Retrain(Attack):
    presets = {"smoke": {}}  # the defaults already run in seconds
    label = "Normal"
    calibration = ("calibrated", "EM at 8/255 drops fastnet to ratio 0.04 at the 10k tier (published 0.09-0.13)")
