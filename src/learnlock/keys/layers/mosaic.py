"""`mosaic`: the key layer removes a secret colour direction per tile of t x t pixels.

The image (3 x H x W, H and W multiples of t) is cut into non-overlapping t x t tiles; tile (i, j)
gets its own secret orthonormal 3 x k colour basis B_ij (k = `dims`, 1 or 2), and the layer is the
per-pixel projection x -> (I - B_ij B_ij^T) x inside the tile. It is the `colour` key with a colour
that changes across the image: a key search over one azimuth on the public cone (which finds the
colour key at the 10k tier, BENCHMARKS.md) faces one azimuth per tile here, (H/t) * (W/(2t)) of them
(the map is mirror-symmetric), so a grid over all of them is out of reach.

- Key cost: k/3 of the input, as the colour key.
- Commutes with horizontal flips (B is mirror-symmetric: tile (i, j) and (i, W/t - 1 - j) share a
  basis), not with any shift: a shifted image meets other tiles' directions, so the noise leaves S.
  The authorized recipe therefore trains without crops or rolls (`authorized_recipe`; its price is
  in the key cost, measured against the plain network with the full recipe).
- `luma` (None: uniformly random directions): every removed direction's squared cosine with the
  ITU-R 601 luma axis, at a secret azimuth per tile (as in `colour`).
- Leaks: noise in S adds variance along B_ij in tile (i, j). Natural images are nearly stationary,
  so the published images' own tile-averaged colour covariance is a reference that needs no clean
  data; against it each tile's excess points at its B_ij (`estimate`). One leaked original gives
  every tile's direction (`from_changes`).

    layer = create_key_layer("mosaic", in_channels=3, image_size=32, seed=7, tile=2, luma=0.9)
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...errors import LearnlockError
from . import KeyLayer, check_luma, cone_max, luma_basis, orthonormal, register_key_layer
from .colour import colour_residual


def tile_colour_covs(images: torch.Tensor, t: int) -> torch.Tensor:
    """Per tile, the 3 x 3 covariance (float64) of the colour residuals x - mean3x3(x) of uint8 images
    at the tile's pixels: (H/t) x (W/t) x 3 x 3."""
    total, count = 0.0, 0
    for chunk in images.split(512):
        r = colour_residual(chunk.double() / 255)
        n, c, h, w = r.shape
        r = r.reshape(n, c, h // t, t, w // t, t).permute(2, 4, 1, 0, 3, 5).reshape(h // t, w // t, c, -1)
        total = total + torch.einsum("ijcp,ijdp->ijcd", r, r)
        count += n * t * t
    return total / max(count, 1)


@register_key_layer("mosaic")
class MosaicKey(KeyLayer):
    def __init__(self, in_channels: int, image_size: int, tile: int = 2, dims: int = 1, luma: float | None = None):
        super().__init__(in_channels, image_size)
        if in_channels != 3:
            raise LearnlockError("the mosaic key needs RGB images (3 channels); for grayscale data use the block "
                                 "family (setting family=block)")
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or image_size % tile:
            divisors = [d for d in range(1, image_size + 1) if image_size % d == 0][:6]
            raise LearnlockError(f"mosaic key: tile is the tile side in pixels and must divide the image size "
                                 f"{image_size}; choose among {divisors}; got {tile!r}")
        if isinstance(dims, bool) or dims not in (1, 2):
            raise LearnlockError(f"mosaic key: dims is the number of removed colour directions per tile, 1 or 2; "
                                 f"got {dims!r}")
        check_luma("mosaic", luma, in_channels)
        self.tile, self.dims, self.luma = tile, dims, None if luma is None else float(luma)
        n = image_size // tile
        basis = torch.zeros(n, n, 3, dims)
        if self.drawing():
            for i in range(n):
                for j in range((n + 1) // 2):   # the mirror tile shares the draw: flips keep S
                    b = orthonormal(3, dims) if luma is None else luma_basis(self.luma, dims)
                    basis[i, j] = basis[i, n - 1 - j] = b
        self.register_buffer("basis_map", basis)   # tiles x tiles x 3 x dims, orthonormal columns

    def public_settings(self) -> dict:
        out = {"tile": self.tile, "dims": self.dims}
        return out if self.luma is None else {**out, "luma": self.luma}

    def pixel_basis(self, size: int, device, dtype) -> torch.Tensor:
        """3 x dims x size x size: every pixel's basis (its tile's)."""
        if size != self.image_size:   # the tiles are laid out for this size (a multiple of the tile)
            raise LearnlockError(f"mosaic key: made for {self.image_size}-pixel images, got {size}")
        b = self.basis_map.to(device=device, dtype=dtype)
        return b.repeat_interleave(self.tile, 0).repeat_interleave(self.tile, 1).permute(2, 3, 0, 1)

    def project(self, x):
        b = self.pixel_basis(x.shape[-1], x.device, x.dtype)
        return torch.einsum("bchw,ckhw,dkhw->bdhw", x, b, b)

    def dim(self) -> int:
        return self.dims * self.image_size ** 2

    @classmethod
    def authorized_recipe(cls, recipe, settings: dict):
        """Flips only: every shift moves the noise onto tiles whose direction differs."""
        if recipe.crop_padding == 0 or not any(a in recipe.augment for a in ("crop", "roll")):
            return recipe
        return replace(recipe, crop_padding=0, crop_step=1)

    def with_basis(self, basis: torch.Tensor) -> "MosaicKey":
        est = type(self)(3, self.image_size, tile=self.tile, dims=self.dims, luma=self.luma)
        est.basis_map.copy_(basis.float())
        return est

    @classmethod
    def from_changes(cls, changes, like):
        """Per tile, the top `dims` eigenvectors of the colour second moment of the changes there
        (one image gives t^2 pixels per tile: enough for one direction where the noise is not zero)."""
        t, n = like.tile, like.image_size // like.tile
        d = changes.double()
        d = d.reshape(len(d), 3, n, t, n, t).permute(2, 4, 1, 0, 3, 5).reshape(n, n, 3, -1)
        moment = torch.einsum("ijcp,ijdp->ijcd", d, d)
        moment = moment + moment.flip(1)   # the mirror tile has the same basis: pool both
        vecs = torch.linalg.eigh(moment)[1].flip(-1)[..., :like.dims]
        return like.with_basis(vecs)

    @classmethod
    def estimate(cls, published, reference, like):
        """Per tile (pooled with its mirror tile), the published colour-residual covariance minus the
        reference's: the clean images' same tile when given, else the published images' own mean over
        all tiles (a stationary model: natural colour statistics hardly change across the image, the
        noise's direction does). On a stated luma cone, the azimuth of largest excess; else the top
        `dims` eigenvectors of the excess."""
        cp = tile_colour_covs(published, like.tile)
        cp = (cp + cp.flip(1)) / 2
        if reference is not None:
            cr = tile_colour_covs(reference, like.tile)
            cr = (cr + cr.flip(1)) / 2
        else:
            cr = cp.mean((0, 1)).expand_as(cp)
        excess = cp - cr
        n = like.image_size // like.tile
        vecs = torch.zeros(n, n, 3, like.dims, dtype=torch.float64)
        for i in range(n):
            for j in range(n):
                if like.luma is not None and like.dims == 1:
                    vecs[i, j, :, 0] = cone_max(excess[i, j], like.luma)
                else:
                    vecs[i, j] = torch.linalg.eigh(excess[i, j])[1].flip(1)[:, :like.dims]
        return like.with_basis(vecs)
