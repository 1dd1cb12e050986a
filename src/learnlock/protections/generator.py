"""UGE's noise generator (the paper's amortised engine): x -> G(x), the same H x W as x; uge.py
scales its output into the rho-ball."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class Generator(nn.Module):
    """ResNet-style conv encoder / decoder: x -> rho * tanh(G(x)) (same H x W as x)."""

    def __init__(self, channels: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)) for _ in range(blocks))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x):
        h = self.down(x)
        for block in self.blocks:
            h = F.relu(h + block(h))
        out = self.up(h)
        return out[..., :x.shape[2], :x.shape[3]]
