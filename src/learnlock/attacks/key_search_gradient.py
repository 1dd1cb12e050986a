"""`key-search-gradient`: a search for a key of one colour direction per tile (`mosaic`; `colour`
is one tile) by gradient ascent on learnability itself (issue 23).

Threat model: as `key-search`. The attacker holds the published images and labels and knows the
scheme (the family and its public settings: tile size, luma share), but has NO clean data, no
leaked originals and no access to the authorized network.

A grid over one azimuth per tile is out of reach (36 candidates per tile, 128 tiles at tile 2 on
32-pixel images), and over a `block` key's secret subspace (d of the patch's D dimensions) there is
no grid at all. The candidate key is made differentiable instead: tile t removes the direction
b_t (on the stated luma cone an azimuth phi_t, else a free unit vector), a `search_net` trains
behind it with the plain recipe, and after every backward pass the directions take a normalised
step UP the training loss while the network takes its step down. It is a min-max: the key layer
learns to remove what the network finds most useful for predicting the labels, and the
error-minimising noise, which lies along the true key, is the most useful thing in the published
images. The search starts from the `key-estimate` guess (`start: estimate`, second-order
statistics of the published images alone) or from random directions (`start: random`), and the
step shrinks along a cosine to zero so the directions settle. The hacker then trains behind the
final directions, as the authorized network does with the true key.

For a `block` key the candidate is a d-dimensional subspace of the scheme's stated candidates (the
patch's even and odd DCT functions in [fmin, fmax], d split between them as the scheme does, so it
stays closed under a mirror): free coefficient matrices, orthonormalised (QR) in every forward
pass, take the same normalised ascent steps.

The search trains with the family's authorized augmentations (a mosaic key: flips only; a block
key: shifts by multiples of k), since any other shift would move the noise out of the candidate S.

`report()` gives the search time and the agreement with the true key (tr(P_S P_est) / dim S) at the
start and at the end, when the trained authorized network is at hand.

Cost: `search_epochs` epochs of `search_net` on the published set (a few minutes at 10,000 images).

    attack = create_attack("key-search-gradient", search_epochs=6)
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(scheme=manifest["extra"]["key"]))
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import torch

from ..errors import LearnlockError
from ..keys.keyed import KeyedNet
from ..keys.layers import LUMA_AXIS, KeyLayer, cone_plane
from ..keys.layers.block import BlockKey, candidates, dc_basis, project_blocks
from ..models import create_model
from ..training import Callback, fit
from . import register_attack
from .key_search import Search, SearchSettings


class DirectionField(KeyLayer):
    """A trainable stand-in for a per-tile colour key: tile (i, j) removes the unit direction
    b_ij; mirror tiles share it. The free values are a buffer (not a parameter), so `fit`'s
    optimiser leaves them alone and `AscentStep` moves them up the loss."""

    def __init__(self, image_size: int, tile: int, luma: float | None, start: torch.Tensor):
        super().__init__(3, image_size)
        self.tile, self.luma, self.n = tile, luma, image_size // tile
        half = (self.n + 1) // 2
        start = start.double()[:, :half]                                   # n x half x 3 unit vectors
        if luma is not None:   # the azimuth of each start direction around the luma axis
            plane = start @ cone_plane()
            free = torch.atan2(plane[..., 1], plane[..., 0])
        else:
            free = start
        self.register_buffer("free", free.float().clone())
        self.register_buffer("plane", cone_plane().float())

    def directions(self) -> torch.Tensor:
        """n x n x 3 unit directions (mirror tiles filled in)."""
        if self.luma is not None:
            ring = torch.stack([self.free.cos(), self.free.sin()], -1) @ self.plane.T
            half = math.sqrt(self.luma) * LUMA_AXIS.float() + math.sqrt(1 - self.luma) * ring
        else:
            half = self.free / self.free.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.cat([half, half.flip(1)[:, self.n % 2:]], 1)

    def project(self, x):
        b = self.directions().to(x.device, x.dtype)
        b = b.repeat_interleave(self.tile, 0).repeat_interleave(self.tile, 1).permute(2, 0, 1)   # 3 x H x W
        return b * (x * b).sum(1, keepdim=True)

    def dim(self) -> int:
        return self.image_size ** 2


class SubspaceField(KeyLayer):
    """A trainable stand-in for a `block` key: S = span(cand @ (free * mask)) in every k x k block,
    the mask keeping the scheme's even/odd split (the first columns use even candidates only, the
    rest odd ones), so S stays closed under a mirror. The block mean (`dc`) is public and fixed.
    `free` is a buffer moved by `AscentStep`; its scale does not matter (QR), so it starts at rms 1."""

    def __init__(self, like: BlockKey, start: BlockKey):
        super().__init__(like.in_channels, like.image_size)
        self.k = like.k
        even, odd = candidates(like.in_channels, like.k, like.fmin, like.fmax)
        cand = torch.cat([even, odd], 1)                                        # D x n, orthonormal
        m_even, m_odd = like.split
        mask = torch.zeros(cand.shape[1], m_even + m_odd)
        mask[:even.shape[1], :m_even] = 1
        mask[even.shape[1]:, m_even:] = 1
        fixed = dc_basis(like.in_channels, like.k) if like.dc else cand[:, :0]
        free = (cand.T @ start.basis.double()[:, fixed.shape[1]:]).float() * mask   # start's coefficients
        self.register_buffer("cand", cand.float())
        self.register_buffer("fixed", fixed.float())
        self.register_buffer("mask", mask)
        self.register_buffer("free", free / free.pow(2).mean().sqrt().clamp_min(1e-12))

    def basis(self) -> torch.Tensor:
        """D x d orthonormal columns: the fixed block means, then the free subspace."""
        q = torch.linalg.qr(self.cand @ (self.free * self.mask))[0]
        return torch.cat([self.fixed, q], 1)

    def project(self, x):
        return project_blocks(x, self.basis(), self.k)

    def dim(self) -> int:
        return self.basis().shape[1] * (self.image_size // self.k) ** 2


class AscentStep(Callback):
    """After each backward pass, a normalised step of the key's free values up the training loss
    (the network's optimiser takes its step down), shrinking along a cosine over `steps`."""

    def __init__(self, field: DirectionField, lr: float, steps: int):
        self.field, self.lr, self.steps = field, lr, max(steps, 1)

    def on_fit_start(self, model, recipe):
        # a leaf that collects gradients (fit may have moved the buffer to another device)
        self.field.free = self.field.free.detach().requires_grad_(True)

    def on_backward(self, model, step):
        g = self.field.free.grad
        if g is None:
            return
        lr = self.lr * 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        with torch.no_grad():
            self.field.free += lr * g / g.pow(2).mean().sqrt().clamp_min(1e-20)
        self.field.free.grad = None


@dataclass(frozen=True)
class KeySearchGradientSettings(SearchSettings):
    search_epochs: int = 6      # epochs of the min-max
    key_lr: float = 0.05        # the first ascent step (radians of azimuth; free vectors: a share of their norm)
    start: str = "estimate"     # estimate: the key-estimate guess (no clean data); random: random directions

    def check(self):
        super().check()
        self.require(self.key_lr > 0, f"key_lr must be > 0, got {self.key_lr!r}")
        self.require(self.start in ("estimate", "random"), f"start is estimate or random, got {self.start!r}")


@register_attack("key-search-gradient")
class KeySearchGradient(Search):
    Settings = KeySearchGradientSettings
    presets = {"smoke": dict(search_epochs=1)}
    families = ("colour", "mosaic", "block")

    @classmethod
    def applies_to(cls, scheme):
        scheme = scheme or {}
        if scheme.get("family") == "block":   # a subspace of any dimension
            return True
        return super().applies_to(scheme)

    @staticmethod
    def tiles_of(like: KeyLayer) -> tuple[int, torch.Tensor]:
        """The tile size and the n x n x 3 directions of a one-direction-per-tile key."""
        if like.family == "colour" and like.dims == 1:
            return like.image_size, like.basis[:, 0].double().view(1, 1, 3)
        if like.family == "mosaic" and like.dims == 1:
            return like.tile, like.basis_map[..., 0].double()
        raise LearnlockError(f"key-search-gradient searches keys of one colour direction per tile (colour or mosaic "
                             f"with dims 1); the scheme is {like.family!r} with settings {like.public_settings()}: "
                             "use key-estimate for it")

    def transform(self, data, context):
        like = self.scheme(data, context)
        if like.family != "block":
            tile, _ = self.tiles_of(like)   # refuses what it cannot search before any work
        start_time = time.perf_counter()
        if self.settings.start == "estimate":
            first = type(like).estimate(data.images, None, like)
        else:
            first = copy.deepcopy(like)   # the scheme's layer is drawn from seed 0: random, not the key
        if like.family == "block":
            field = SubspaceField(like, first)
        else:
            field = DirectionField(like.image_size, tile, like.luma, self.tiles_of(first)[1])
        recipe = self.search_recipe()
        recipe = type(like).authorized_recipe(replace(recipe, epochs=self.settings.search_epochs), like.public_settings())
        net = create_model(self.settings.search_net, data.num_classes, data.in_channels, seed=recipe.seed)
        steps = self.settings.search_epochs * math.ceil(len(data) / recipe.batch_size)
        fit(KeyedNet(field, net), data, recipe, callbacks=[AscentStep(field, self.settings.key_lr, steps)],
            progress=False, desc="key-search-gradient")
        self.estimate = self.layer_from(like, field).eval()
        self.search = {"start": self.settings.start, "epochs": self.settings.search_epochs,
                       "seconds": round(time.perf_counter() - start_time, 1)}
        self.agreement = None
        if isinstance(context.teacher, KeyedNet):
            true = copy.deepcopy(context.teacher.layer).cpu()
            self.agreement = true.agreement(self.estimate)
            self.search["agreement_at_start"] = round(true.agreement(first), 4)
        return data

    @staticmethod
    def layer_from(like: KeyLayer, field: KeyLayer) -> KeyLayer:
        """A key layer of `like`'s family holding what the search's field found."""
        est = copy.deepcopy(like)
        with torch.no_grad():
            if like.family == "block":
                est.basis.copy_(field.basis())
                return est
            directions = field.directions().double()
        if like.family == "colour":
            est.basis.copy_(directions[0, 0][:, None].float())
            return est
        return like.with_basis(directions[..., None])
