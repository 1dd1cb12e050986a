"""`ueraser`: adversarial augmentation against unlearnable examples (UEraser; Qin et al.,
"Learning the Unlearnable: Adversarial Augmentations Suppress Unlearnable Example Attacks", 2023).

Every training batch (after the recipe's crop + flip) goes through a chain of strong
augmentations - plasma brightness, plasma contrast, channel shuffle and TrivialAugment, from
kornia, with the reference implementation's ranges (lafeat/ueraser, EM/QuickStart). For the first
`adversarial_fraction` of the epochs each image is drawn `repeats` times (K, default 5) and the
model trains on the draw with the highest loss (maximum loss = the gradient at the argmax draw;
the selection forward runs in eval mode so the K extra passes do not move BatchNorm statistics);
after that on one draw per image (UEraser-Lite). The strong augmentation never stops: trained on
plain crop + flip at the end, a network learns the intact shortcut in those last epochs (measured
on an earlier learnlock version that did: on EM, dev accuracy fell from 47.4 % to 15.5 % in the last
5 of 20 epochs, a test ratio of 0.10).
The reference spends 50 of 200 epochs (0.25) on the adversarial draws, the default here.
Augmentation draws are seeded by the recipe's seed and the step (kornia uses the global RNG,
so it runs inside a forked RNG state).

    model = create_attack("ueraser", repeats=5).train(published, "resnet18", seed=0, recipe=RECIPES["ue-gpu"])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..training import Callback
from . import register_attack
from .base import Attack, AttackSettings


@dataclass(frozen=True)
class UEraserSettings(AttackSettings):
    repeats: int = 5                    # K augmented draws per image; the max-loss one is kept
    adversarial_fraction: float = 0.25  # share of the epochs with K max-loss draws; one draw after that

    def check(self):
        self.require(self.repeats >= 1, f"repeats must be an integer >= 1, got {self.repeats!r}")
        self.require(0 <= self.adversarial_fraction <= 1,
                     f"adversarial_fraction must be in [0, 1], got {self.adversarial_fraction}")


def strong_augment():
    import kornia.augmentation as K
    from kornia.augmentation.auto import TrivialAugment

    return K.AugmentationSequential(
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), p=1.0, keepdim=True),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=1.0, keepdim=True),
        K.RandomChannelShuffle(p=0.5, keepdim=True),
        TrivialAugment(),
    )


class MaxLossAugment(Callback):
    def __init__(self, settings: UEraserSettings):
        self.s = settings
        self.aug = strong_augment()

    def on_fit_start(self, model, recipe):
        self.seed = recipe.seed
        self.adversarial_epochs = round(self.s.adversarial_fraction * recipe.epochs)
        self.epoch = 1

    def on_epoch_end(self, model, epoch):
        self.epoch = epoch + 1

    def on_batch(self, model, x, y, step):
        repeats = self.s.repeats if self.epoch <= self.adversarial_epochs else 1
        seed = self.seed * 1_000_003 + step
        cuda = [x.device.index or 0] if x.is_cuda else []
        with torch.random.fork_rng(devices=cuda):  # seeded draws on x's device; global RNGs untouched
            torch.random.default_generator.manual_seed(seed)
            for i in cuda:
                torch.cuda.default_generators[i].manual_seed(seed)
            draws = [self.aug(x).clamp(0, 1) for _ in range(repeats)]
        if len(draws) == 1:
            return draws[0], y
        was_training = model.training
        model.eval()
        with torch.no_grad():
            losses = torch.stack([F.cross_entropy(model(d), y, reduction="none") for d in draws])
        model.train(was_training)
        best = losses.argmax(0)
        stacked = torch.stack(draws)
        return stacked[best, torch.arange(len(x), device=x.device)], y


@register_attack("ueraser")
class UEraser(Attack):
    Settings = UEraserSettings
    presets = {"smoke": dict(repeats=2, adversarial_fraction=0.5)}
    calibration = ("calibrated", "restores EM at 8/255 to ratio 0.81-0.86 of clean data under UEraser at the 10k tier "
                   "(fastnet, 10 epochs, two EM variants, 1 seed each; pass mark 0.8); before the 2026-12-05 fix, whose "
                   "last epochs trained on plain crops, it reached 0.39-0.76")

    def callbacks(self, context):
        return [MaxLossAugment(self.settings)]
