"""Key layers: the frozen, secret first layer of a `keyed` authorized network.

A key layer is a fixed linear map x -> x - P_S x that annihilates a secret subspace S of the
input space (P_S is the orthogonal projector onto S). Its buffers are drawn from a seed derived
from the key's secret; it has no parameters, so no optimiser ever changes it. Noise that lies
in S is invisible to the authorized network; every network without the layer sees it.

Families (one file each): `colour` (a secret colour direction per pixel), `spectral` (a secret
colour direction per spatial frequency, on a secret set of frequencies), `block` (a secret
subspace of the k x k patch space in every block; any number of channels), `mosaic` (a secret
colour direction per tile of t x t pixels).

    layer = create_key_layer("spectral", in_channels=3, image_size=32, seed=7)
    layer(x)                    # x with its component in S removed
    layer.project(x)            # P_S x: the component the noise may use
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import LearnlockError
from ...registry import Registry


class KeyLayer(nn.Module):
    """Base class: a family takes its public settings as keyword arguments after (in_channels,
    image_size) and implements `project` (P_S x) and `estimate` (the key-estimation attack's guess
    of S from data). `name` (the family) is set by `register_key_layer`."""

    name = ""

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        if in_channels not in (1, 3):
            raise LearnlockError(f"key layer: in_channels must be 1 or 3, got {in_channels!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
            raise LearnlockError(f"key layer: image_size must be an integer >= 4, got {image_size!r}")
        self.in_channels, self.image_size = in_channels, image_size

    @staticmethod
    def drawing() -> bool:
        """False while a model is built on the meta device (NetSpec's shape check): then buffers
        get their shapes only and no random number is drawn."""
        return torch.empty(0).device.type != "meta"

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """P_S x for float images B x C x H x W."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 even inside bf16 autocast: a bf16 projection would let part of the blind spot through
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            return x - self.project(x)

    def dim(self) -> int:
        """The dimension of S per image (the values the key layer removes)."""
        raise NotImplementedError

    def cost(self) -> float:
        """The share of input dimensions the key layer removes (its key cost in dimensions)."""
        return self.dim() / (self.in_channels * self.image_size ** 2)

    @classmethod
    def estimate(cls, published: torch.Tensor, reference: torch.Tensor | None, like: "KeyLayer") -> "KeyLayer":
        """An attacker's estimate of the key, from uint8 published images (and clean reference
        images when given), knowing the family and its public settings (`like`'s), not the key."""
        raise NotImplementedError

    @classmethod
    def from_changes(cls, changes: torch.Tensor, like: "KeyLayer") -> "KeyLayer":
        """The key read from changes published - original (float64, B x C x H x W, [0, 1] units) that
        lie in S: the leaked-pairs attack's estimate."""
        raise NotImplementedError

    @classmethod
    def reads_changes(cls) -> bool:
        return cls.from_changes.__func__ is not KeyLayer.from_changes.__func__

    @property
    def family(self) -> str:
        return self.name

    def public_settings(self) -> dict:
        return {p: getattr(self, p) for p in family_params(self.name)}

    @classmethod
    def authorized_recipe(cls, recipe, settings: dict):
        """The authorized network's recipe for this family with public `settings`: `recipe` with
        its augmentations changed into ones the key layer commutes with (default: unchanged; a
        crop or shift that moves noise out of S would show it to the authorized network)."""
        return recipe

    @torch.no_grad()
    def agreement(self, other: "KeyLayer", probes: int = 64, seed: int = 0) -> float:
        """tr(P_S P_T) / dim(S): 1 when `other` removes all of S, 0 when it removes none of it,
        estimated with Gaussian probes z as E|P_T P_S z|^2 / E|P_S z|^2."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((probes, self.in_channels, self.image_size, self.image_size), generator=g)
        s = self.project(z)
        return float(other.project(s).pow(2).sum() / s.pow(2).sum().clamp_min(1e-12))


def orthonormal(rows: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random rows x k matrix with orthonormal columns (QR of a Gaussian)."""
    q, r = torch.linalg.qr(torch.randn(rows, k, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: the QR basis is then uniform


LUMA_AXIS = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
LUMA_AXIS = LUMA_AXIS / LUMA_AXIS.norm()


def check_luma(family: str, luma, in_channels: int) -> None:
    if luma is not None and (in_channels != 3 or isinstance(luma, bool) or not isinstance(luma, (int, float))
                             or not 0 <= luma <= 1):
        raise LearnlockError(f"{family} key: luma is a squared cosine with the luma axis in [0, 1], for RGB images "
                             f"only (None: random colour directions); got {luma!r} on {in_channels}-channel images")


def luma_basis(luma: float, dims: int) -> torch.Tensor:
    """3 x dims orthonormal: the first column at squared cosine `luma` with the luma axis, at a
    random azimuth around it; further columns random in its orthogonal complement."""
    g = torch.randn(3, dims, dtype=torch.float64)
    u = g[:, 0] - (g[:, 0] @ LUMA_AXIS) * LUMA_AXIS
    first = math.sqrt(luma) * LUMA_AXIS + math.sqrt(1 - luma) * u / u.norm()
    q, r = torch.linalg.qr(torch.cat([first[:, None], g[:, 1:]], 1))
    return (q * torch.sign(torch.diagonal(r))).float()


def generalized_excess(cp: torch.Tensor, cr: torch.Tensor):
    """For a published covariance cp against a reference cr (float64, C x C): the generalized
    eigenvalues (variance ratios, descending; scale-free, they rank candidates), their eigenvectors
    (columns, same order), and the excess cp - w cr, w the smallest ratio (the common scale, 1 for a
    matched clean reference). For an excess of rank k along B, the excess's top eigenvectors are B
    itself; the top generalized ones are pulled towards directions of low natural variance."""
    import scipy.linalg

    ridge = torch.eye(len(cp), dtype=torch.float64) * 1e-12 * float(torch.trace(cr) + 1e-30)
    w, g = scipy.linalg.eigh(cp.numpy(), (cr + ridge).numpy())
    return (torch.from_numpy(w[::-1].copy()), torch.from_numpy(g[:, ::-1].copy()),
            cp - float(w.min()) * cr)


def cone_plane() -> torch.Tensor:
    """3 x 2 orthonormal basis (float64) of the plane orthogonal to the luma axis: azimuth 0 and 90 degrees."""
    e = torch.eye(3, dtype=torch.float64)
    return torch.linalg.qr(torch.stack([LUMA_AXIS, e[0], e[1]], 1))[0][:, 1:]


def cone_ring(luma: float, steps: int = 720) -> torch.Tensor:
    """3 x steps unit vectors at squared cosine `luma` with the luma axis, evenly spaced in azimuth."""
    u1 = cone_plane()
    phi = torch.arange(steps, dtype=torch.float64) * (2 * math.pi / steps)
    ring = torch.stack([phi.cos(), phi.sin()])                                   # 2 x steps
    return math.sqrt(luma) * LUMA_AXIS[:, None] + math.sqrt(1 - luma) * (u1 @ ring)


def cone_max(excess: torch.Tensor, luma: float, steps: int = 720) -> torch.Tensor:
    """The unit vector on the cone at squared cosine `luma` along which the symmetric 3 x 3 `excess`
    (float64) is largest, over a grid of azimuths. For a rank-1 excess along b on the cone: b."""
    b = cone_ring(luma, steps)
    return b[:, int(((excess @ b) * b).sum(0).argmax())]


def cone_direction(cp: torch.Tensor, cr: torch.Tensor, luma: float, steps: int = 720) -> torch.Tensor:
    """The attacker's estimate of one removed colour when the scheme states its luma share: the
    unit vector at squared cosine `luma` with the luma axis along which the published covariance
    cp exceeds the reference cr most (3 x 3, float64; see `generalized_excess`), over a grid of
    azimuths. For a rank-1 excess along b on the cone its maximum is b itself."""
    return cone_max(generalized_excess(cp, cr)[2], luma, steps)


# a family's settings are its constructor's keyword arguments after these
KEY_LAYERS = Registry("key family", fixed=("in_channels", "image_size"), kind=KeyLayer)
register_key_layer = KEY_LAYERS.register
list_key_layers = KEY_LAYERS.names
get_key_layer = KEY_LAYERS.get
check_params = KEY_LAYERS.check      # check_params(family, settings): refuse settings the family does not take
family_params = KEY_LAYERS.settings  # family_params(family): the family's public settings, in order


def create_key_layer(family: str, in_channels: int, image_size: int, seed: int | None = None,
                     **kwargs) -> KeyLayer:
    """The key layer of `family`; with `seed` its buffers depend on the seed alone (the global RNG
    is left as it was), else they are drawn from the global RNG."""
    if seed is None:
        return KEY_LAYERS.create(family, in_channels, image_size, **kwargs)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(seed)
        return KEY_LAYERS.create(family, in_channels, image_size, **kwargs)


from . import block, colour, mosaic, spectral  # noqa: E402,F401  (register on import)

__all__ = ["KEY_LAYERS", "LUMA_AXIS", "KeyLayer", "check_luma", "check_params", "cone_direction", "cone_max", "cone_plane", "cone_ring", "create_key_layer",
           "family_params", "generalized_excess", "get_key_layer", "list_key_layers", "luma_basis", "orthonormal",
           "register_key_layer"]
