"""How a network is trained: `Recipe` (frozen settings with units), the named `RECIPES` and `get_recipe`.

Apart from training.py so that manifests (data/manifest.py) and cache keys can read and check a
recipe without importing the training loop, which imports data/.

    recipe = get_recipe("cpu", epochs=5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from .errors import LearnlockError, require

if TYPE_CHECKING:
    import torch

AUGMENTS = ("none", "flip", "crop", "crop+flip", "roll", "roll+flip")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant", "step", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "native")
# fields added after recipes were first written into manifests and cache keys: left out of
# to_dict at these defaults, so every older recipe keeps its key
LATER_DEFAULTS = {"precision": "auto", "label_smoothing": 0.0, "test_flip": False, "warmup": 0.25, "crop_step": 1}


@dataclass(frozen=True)
class Recipe:
    """How a network is trained. Units: lr per step, weight decay as L2 coefficient, epochs full passes."""

    name: str = "custom"
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"        # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9         # sgd only
    nesterov: bool = True         # sgd only
    weight_decay: float = 5e-4
    schedule: str = "cosine"      # cosine (per step, to 0) | constant | step (x0.1 at 50% and 75%)
    #                               | onecycle (linear from 0 up to lr over `warmup` of the steps, then down to 0)
    augment: str = "crop+flip"    # none | flip | crop | crop+flip | roll | roll+flip
    crop_padding: int = 4         # crops: pixels of zero padding; roll: largest circular shift
    seed: int = 0                 # data order and augmentation draws
    precision: str = "auto"       # auto (bf16 autocast on CUDA, fp32 elsewhere) | fp32 | bf16
    #                               | native (bf16 wherever the hardware has it: CUDA, or a CPU with bf16 instructions)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (the default loss only)
    test_flip: bool = False       # evaluate averages the logits of each test image and its mirror
    warmup: float = 0.25          # onecycle: share of the steps spent rising to lr
    crop_step: int = 1            # crops and rolls shift by multiples of this many pixels (block keys: k)
    # no device: where a run computes is chosen once (learnlock.device), never stored with a recipe

    def __post_init__(self):
        def need(ok: bool, message: str):
            require(ok, f"recipe {self.name!r}: {message}")

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        need(self.crop_padding >= 0, f"crop_padding must be >= 0, got {self.crop_padding}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 < self.warmup < 1, f"warmup must be in (0, 1), got {self.warmup}")
        need(isinstance(self.crop_step, int) and self.crop_step >= 1 and self.crop_padding % self.crop_step == 0,
             f"crop_step must be an integer >= 1 that divides crop_padding ({self.crop_padding}), got {self.crop_step!r}")

    def to_dict(self) -> dict:
        """The settings as written into manifests and cache keys. Fields added later are left out at
        their defaults (precision "auto" computes what recipes before the field computed, fp32 on
        CPU), so older keys do not change."""
        return {k: v for k, v in asdict(self).items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}

    def uses_bf16(self, device: torch.device) -> bool:
        """Whether fit trains this recipe under bf16 autocast on `device`. Same seed, same bytes
        holds per (precision actually used, CPU instruction set, thread count): bf16 kernels differ
        between CPUs with and without bf16 instructions, so a cell records what it used."""
        if self.precision == "native":
            return device.type == "cuda" or native_bf16()
        return self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")


def native_bf16() -> bool:
    """This CPU computes bf16 in hardware (AVX512-BF16 or AMX): bf16 autocast then trains about
    1.7x faster than fp32 (bench/speed.py); without it bf16 is emulated and slower."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


RECIPES: dict[str, Recipe] = {
    # The unlearnable-examples literature (Huang et al. 2021 and successors) on GPUs.
    "ue-gpu": Recipe(name="ue-gpu", epochs=60, batch_size=128, lr=0.1, momentum=0.9,
                     nesterov=False, weight_decay=5e-4, schedule="cosine", augment="crop+flip"),
    # Sized for a 2-core CPU on a few thousand images: fewer epochs, a smaller lr that the
    # light nets of the zoo tolerate without BatchNorm-free heads diverging.
    "cpu": Recipe(name="cpu", epochs=15, batch_size=128, lr=0.05, momentum=0.9,
                  nesterov=True, weight_decay=5e-4, schedule="cosine", augment="crop+flip"),
    # The evaluator of the 10k tier, for `fastnet` (airbench94's recipe, simplified): batch 256,
    # Nesterov SGD lr 0.2 with a one-cycle schedule, label smoothing 0.2, flip + 2-pixel
    # translation, flip at test time, 10 epochs. Precision auto (bf16 on GPUs, fp32 on CPUs), so the
    # tier's cells stay in one precision on CPUs; bf16 ("native") trains it 1.8x faster on CPUs with
    # bf16 instructions at the same verdicts (BENCHMARKS.md, bench/speed.py --precision).
    "fast": Recipe(name="fast", epochs=10, batch_size=256, lr=0.2, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="onecycle", augment="crop+flip", crop_padding=2,
                   label_smoothing=0.2, test_flip=True),
}


def get_recipe(name_or_recipe: str | Recipe, **overrides) -> Recipe:
    if isinstance(name_or_recipe, Recipe):
        recipe = name_or_recipe
    elif name_or_recipe in RECIPES:
        recipe = RECIPES[name_or_recipe]
    else:
        raise LearnlockError(f"unknown recipe {name_or_recipe!r}; choose one of: {', '.join(RECIPES)}")
    return replace(recipe, **overrides) if overrides else recipe
