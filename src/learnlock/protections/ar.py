"""Autoregressive perturbations (Sandoval-Segura et al., "Autoregressive Perturbations for Data
Poisoning", NeurIPS 2022): a synthetic shortcut that needs no model.

Norm L2 (see protections.base): every item's perturbation is scaled to L2 norm
rho * sqrt(C * H * W) (default rho 0.018 = the paper's L2 eps 1.0 on 32 x 32 RGB).

As in the paper, each class has one AR process per channel over a causal 3 x 3 window with no
innovation noise,
    p[i, j] = sum_k b_k p[i - di_k, j - dj_k],
its 8 coefficients drawn Gaussian and divided by their (signed) sum, so they sum to 1. Each item
starts from its own Gaussian field; the process overwrites it in raster order, and the first
`crop` rows and columns (which keep the start values) are cut off. Because there is no innovation
noise, the class's filter (b, -1) answers exactly 0 on every one of its items: a linearly
separable feature one convolution finds at once, while the patterns look like smooth texture.

Processes are drawn greedily (the paper's parameter search): a candidate is rejected when a test
pattern diverges (unscaled L2 norm above `max_norm`) or when a filter of an accepted class
answers it weakly (ReLU response below `min_response` on a norm-1 pattern), so classes differ.

An earlier learnlock version added N(0, 1) innovation noise and scaled sum |b| to 0.95; that
process is mostly white noise and did not poison a fastnet at the 10k tier (BENCHMARKS.md).

    x_q = create_protection("ar").apply(data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.base import ImageDataset
from ..errors import LearnlockError
from .base import Protection, ProtectionSettings, register_protection

SIZE = 3           # the 3 x 3 window; its last entry (the pixel itself) is 0
CANDIDATES = 1024  # one-channel candidates drawn per batch
MAX_DRAWS = 200_000   # one-channel candidates before the search gives up
POOL = 256            # stable processes per round of the greedy search
MAX_POOLS = 64


def ar_generate(coef: torch.Tensor, h: int, w: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """Run one noise-free AR process per item of `coef` (N x C x 3 x 3, last entry 0) from a
    Gaussian start: N x C x h x w, the first `crop` rows and columns cut off (unscaled)."""
    n, c = coef.shape[:2]
    H, W = h + crop, w + crop
    p = torch.randn((n, c, H, W), generator=gen, dtype=torch.float64)
    coef = coef.double()
    for i in range(H - SIZE + 1):
        for j in range(W - SIZE + 1):
            p[:, :, i + SIZE - 1, j + SIZE - 1] = (p[:, :, i:i + SIZE, j:j + SIZE] * coef).sum((-1, -2))
    return p[:, :, crop:, crop:]


def ar_filter(coef: torch.Tensor) -> torch.Tensor:
    """The matching filter of processes C x 3 x 3: (b, -1), 1 x C x 3 x 3; its entries sum to 0 per channel."""
    f = coef.clone()
    f[:, -1, -1] = -1
    return f[None]


def response(filt: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Sum of the ReLU of a filter's answer over each pattern (N x C x h x w): N values."""
    return F.relu(F.conv2d(patterns, filt)).flatten(1).sum(1)


def stable_channels(count: int, crop: int, size: tuple[int, int], max_norm: float, trials: int,
                    gen: torch.Generator) -> torch.Tensor:
    """`count` one-channel processes (count x 3 x 3, summing to 1) whose test patterns stay under
    `max_norm`. Channels run independently, so drawing them one at a time is the paper's rejection
    on whole processes at a fraction of the draws (about 1 in 4 channels is stable, 1 in 80 triples)."""
    kept: list[torch.Tensor] = []
    drawn = 0
    while sum(len(k) for k in kept) < count:
        if drawn >= MAX_DRAWS:
            raise LearnlockError(f"ar: no stable process in {drawn} draws; raise max_norm (now {max_norm})")
        b = torch.randn((CANDIDATES, 1, SIZE, SIZE), generator=gen, dtype=torch.float64)
        b[:, :, -1, -1] = 0
        b = b / b.sum((-1, -2), keepdim=True)
        drawn += CANDIDATES
        norms = ar_generate(b.repeat_interleave(trials, 0), *size, crop, gen).flatten(1).norm(dim=1)
        ok = (norms.isfinite() & (norms <= max_norm)).view(CANDIDATES, trials).all(1) & b.flatten(1).isfinite().all(1)
        kept.append(b[ok, 0])
    return torch.cat(kept)[:count]


def ar_processes(num_classes: int, channels: int, size: tuple[int, int], crop: int, max_norm: float,
                 min_response: float, gen: torch.Generator, trials: int = 3) -> torch.Tensor:
    """K x C x 3 x 3 coefficients found by the paper's greedy search (see the module docstring):
    stable processes are drawn in pools of POOL and scanned in order."""
    found: list[torch.Tensor] = []
    for _ in range(MAX_POOLS):
        b = stable_channels(POOL * channels, crop, size, max_norm, trials, gen).view(POOL, channels, SIZE, SIZE)
        x = ar_generate(b, *size, crop, gen)
        x = (x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).float()
        for i in range(POOL):
            if all(float(response(ar_filter(f), x[i:i + 1])) >= min_response for f in found):
                found.append(b[i].float())
                if len(found) == num_classes:
                    return torch.stack(found)
    raise LearnlockError(f"ar: found only {len(found)} of {num_classes} distinct processes among "
                         f"{MAX_POOLS * POOL} stable ones; lower min_response (now {min_response})")


@dataclass(frozen=True)
class ARSettings(ProtectionSettings):
    rho: float = 0.018          # root-mean-square change per value; L2 radius rho * sqrt(C*H*W)
    crop: int = 4               # start rows/columns cut off (the paper generates 36 x 36 for 32 x 32)
    max_norm: float = 50.0      # a process whose unscaled pattern exceeds this L2 norm diverges
    min_response: float = 10.0  # least ReLU response of another class's filter on a norm-1 32 x 32
                                # pattern (the paper's); scaled by sqrt(h * w / 1024) for other sizes,
                                # as a response sums over positions of a pattern of norm 1

    def __post_init__(self):
        super().__post_init__()
        self.require(2 <= self.crop <= 16,
                     f"crop must be an integer in [2, 16] (the start rows the process keeps), got {self.crop!r}")
        self.require(self.max_norm > 0, f"max_norm must be positive, got {self.max_norm}")
        self.require(self.min_response >= 0, f"min_response must be >= 0, got {self.min_response}")


@register_protection("ar")
class Autoregressive(Protection):
    """Autoregressive perturbations (Sandoval-Segura et al. 2022); see the module docstring."""

    Settings = ARSettings
    presets = {"smoke": dict(min_response=0.5)}  # 8 x 8 patterns answer more weakly than 32 x 32
    norm = "l2"

    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        g = torch.Generator().manual_seed(s.seed)
        c, h, w = data.images.shape[1:]
        min_response = s.min_response * (h * w / 1024) ** 0.5
        coef = ar_processes(data.num_classes, c, (h, w), s.crop, s.max_norm, min_response, g)
        delta = torch.cat([ar_generate(coef[labels], h, w, s.crop, g).float()
                           for labels in data.labels.split(4096)])
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return data.float_images() + delta * (self.l2_radius((c, h, w)) / norms)
