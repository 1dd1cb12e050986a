"""`block`: the key layer removes a secret subspace of the k x k patch space in every k x k block.

The image (C x H x W, H and W multiples of k) is cut into non-overlapping k x k blocks; each block
is a vector of D = C k^2 values. A secret d-dimensional subspace U of that patch space (d = `dims`,
U a D x d orthonormal basis) is removed in every block: x_block -> (I - U U^T) x_block. The same U
in every block, so the layer is a frozen stride-k convolution followed by its transpose.

- U is drawn within the span of the patch's 2-D DCT functions whose frequency radius
  sqrt(u^2 + v^2) (u vertical, v horizontal, in DCT indices 0..k-1) lies in [fmin, fmax], times every
  channel; fmin 1 leaves the block mean alone. A DCT function is even (v even) or odd (v odd)
  under a horizontal mirror of the patch; U is the sum of a random subspace of the even candidates
  and one of the odd candidates (their dimensions in proportion, fixed by the public settings), so
  U is closed under the mirror.
- Commutes exactly with horizontal flips (W a multiple of k maps blocks onto mirrored blocks) and
  with shifts by multiples of k (circular, or zero padded: a zero block stays zero). Any other
  shift moves the noise across block borders, out of S: the authorized recipe therefore crops by
  multiples of k only (`authorized_recipe`); hackers crop as they like.
- `dc` (off by default): S also holds the block mean of every channel (the constant patch), and the
  secret draw fills the other d - C dimensions. Only then does S hold non-negative noise: a noise
  without a mean in a black block (Fashion-MNIST's background, x = 0) is cut by the [0, 1] box at
  export. The authorized net then sees no block means (the image minus its (H/k) x (W/k) thumbnail).
- Key cost: d / D of the input (the authorized net sees D - d values per block).
- Leaks: the noise adds variance to U in the block-aligned patch covariance; against clean
  reference images, or against the published images' own stationary (shift-averaged)
  covariance, it points at U (`estimate`).

    layer = create_key_layer("block", in_channels=1, image_size=28, seed=7, k=4, dims=4)
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ...errors import LearnlockError
from . import KeyLayer, orthonormal, register_key_layer
from .colour import top_generalized


def dct_matrix(k: int) -> torch.Tensor:
    """k x k orthonormal DCT-II: row u is the u-th basis function over n = 0..k-1 (float64)."""
    n = torch.arange(k, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * k))
    m[0] /= math.sqrt(2)
    return m * math.sqrt(2 / k)


def candidates(channels: int, k: int, fmin: float, fmax: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(even, odd): D x n orthonormal columns, the channel x DCT functions of the patch whose radius
    lies in [fmin, fmax], split by their parity under a horizontal mirror (float64)."""
    d = dct_matrix(k)
    even, odd = [], []
    for u in range(k):
        for v in range(k):
            if fmin <= math.hypot(u, v) <= (math.inf if fmax is None else fmax):
                f = torch.outer(d[u], d[v])
                for c in range(channels):
                    e = torch.zeros(channels, k, k, dtype=torch.float64)
                    e[c] = f
                    (even if v % 2 == 0 else odd).append(e.flatten())
    size = channels * k * k
    stack = lambda cols: torch.stack(cols, 1) if cols else torch.zeros(size, 0, dtype=torch.float64)  # noqa: E731
    return stack(even), stack(odd)


def dc_basis(channels: int, k: int) -> torch.Tensor:
    """D x C orthonormal columns (float64): the constant patch of each channel (the block mean)."""
    out = torch.zeros(channels, k * k, channels, dtype=torch.float64)
    for c in range(channels):
        out[c, :, c] = 1 / k
    return out.reshape(channels * k * k, channels)


def split_dims(dims: int, n_even: int, n_odd: int) -> tuple[int, int]:
    """How many of `dims` go to the even and to the odd candidates: in proportion, within bounds."""
    e = round(dims * n_even / max(n_even + n_odd, 1))
    e = min(max(e, dims - n_odd), n_even)
    return e, dims - e


def blocks(x: torch.Tensor, k: int) -> torch.Tensor:
    """B x C x H x W -> B x (H/k) x (W/k) x (C k k)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // k, k, w // k, k).permute(0, 2, 4, 1, 3, 5).reshape(b, h // k, w // k, c * k * k)


def unblocks(p: torch.Tensor, c: int, k: int) -> torch.Tensor:
    b, hb, wb, _ = p.shape
    return p.reshape(b, hb, wb, c, k, k).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hb * k, wb * k)


def project_blocks(x: torch.Tensor, basis: torch.Tensor, k: int) -> torch.Tensor:
    """P_S x for S = span(basis) (D x d, orthonormal) in every k x k block of float images B x C x H x W."""
    u = basis.to(device=x.device, dtype=x.dtype)
    return unblocks((blocks(x, k) @ u) @ u.T, x.shape[1], k)


def patch_covariance(images: torch.Tensor, k: int) -> torch.Tensor:
    """D x D covariance (float64) of the block-aligned k x k patches of uint8 images (each channel's
    mean over the set removed)."""
    mean = images.double().mean((0, 2, 3), keepdim=True) / 255
    total, count = 0.0, 0
    for chunk in images.split(512):
        p = blocks(chunk.double() / 255 - mean, k).reshape(-1, images.shape[1] * k * k)
        total = total + p.T @ p
        count += len(p)
    return total / max(count, 1)


def stationary_covariance(images: torch.Tensor, k: int) -> torch.Tensor:
    """D x D patch covariance of a stationary model of uint8 images: the autocovariance of every
    channel pair at every displacement |dy|, |dx| < k, averaged over all positions (not only the
    block-aligned ones), placed into patch coordinates. Noise aligned to the blocks is diluted in
    it, natural image statistics (nearly shift-invariant) are not."""
    x = images.double() / 255
    x = x - x.mean((0, 2, 3), keepdim=True)
    c, h, w = x.shape[1:]
    r = torch.zeros(c, c, 2 * k - 1, 2 * k - 1, dtype=torch.float64)
    for dy in range(-k + 1, k):
        for dx in range(-k + 1, k):
            a = x[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            b = x[:, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            r[:, :, dy + k - 1, dx + k - 1] = torch.einsum("ncij,ndij->cd", a, b) / (a[:, 0].numel())
    i = torch.arange(k)
    # cov[(c, y, x), (c', y', x')] = r[c, c', y' - y, x' - x]
    yy = (i[None, None, :, None] - i[:, None, None, None]) + k - 1          # y, x, y', x' -> y' - y
    xx = (i[None, None, None, :] - i[None, :, None, None]) + k - 1          # x' - x
    cov = r[:, :, yy, xx]                                                    # c c' y x y' x'
    return cov.permute(0, 2, 3, 1, 4, 5).reshape(c * k * k, c * k * k)


@register_key_layer("block")
class BlockKey(KeyLayer):
    def __init__(self, in_channels: int, image_size: int, k: int = 4, dims: int = 4, fmin: float = 1.0,
                 fmax: float | None = None, dc: bool = False):
        super().__init__(in_channels, image_size)
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise LearnlockError(f"block key: k is the block side in pixels, an integer >= 2; got {k!r}")
        if image_size % k:
            divisors = [d for d in range(2, image_size + 1) if image_size % d == 0][:6]
            raise LearnlockError(f"block key: the image size {image_size} is not a multiple of k={k}; choose k among "
                                 f"{divisors}")
        if not isinstance(fmin, (int, float)) or isinstance(fmin, bool) or fmin < 0 or (
                fmax is not None and (not isinstance(fmax, (int, float)) or isinstance(fmax, bool) or fmax < fmin)):
            raise LearnlockError(f"block key: need 0 <= fmin <= fmax (DCT frequency radius in the patch, 0 .. "
                                 f"{math.hypot(k - 1, k - 1):.2f}; fmax None: no upper bound); got fmin={fmin!r}, "
                                 f"fmax={fmax!r}")
        if not isinstance(dc, bool):
            raise LearnlockError(f"block key: dc is true (the block mean is in S) or false; got {dc!r}")
        if dc and fmin < 1:
            raise LearnlockError(f"block key: with dc the block mean is already in S; fmin must be >= 1 (got {fmin!r})")
        even, odd = candidates(in_channels, k, fmin, fmax)
        n = even.shape[1] + odd.shape[1]
        fixed = in_channels if dc else 0
        lo = fixed + 1
        if isinstance(dims, bool) or not isinstance(dims, int) or not lo <= dims < in_channels * k * k or dims > n + fixed:
            raise LearnlockError(f"block key: dims is the number of removed patch dimensions, {lo} .. "
                                 f"{min(n + fixed, in_channels * k * k - 1)} for {in_channels}-channel {k} x {k} blocks "
                                 f"with radius in [{fmin}, {fmax}]{' and the block mean' if dc else ''}; got {dims!r}")
        self.k, self.dims, self.fmin, self.fmax = k, dims, float(fmin), None if fmax is None else float(fmax)
        self.dc = dc
        self.split = split_dims(dims - fixed, even.shape[1], odd.shape[1])
        basis = torch.zeros(in_channels * k * k, dims)
        if self.drawing():
            parts = [dc_basis(in_channels, k)] if dc else []
            parts += [c @ orthonormal(c.shape[1], m).double() for c, m in zip((even, odd), self.split) if m]
            basis = torch.cat(parts, 1).float()
        self.register_buffer("basis", basis)   # D x dims, orthonormal, flip-closed

    def public_settings(self) -> dict:
        return {"k": self.k, "dims": self.dims, "fmin": self.fmin, "fmax": self.fmax, "dc": self.dc}

    def project(self, x):
        if x.shape[-1] % self.k or x.shape[-2] % self.k:
            raise LearnlockError(f"block key: image sides {tuple(x.shape[-2:])} are not multiples of k={self.k}")
        return project_blocks(x, self.basis, self.k)

    def dim(self) -> int:
        return self.dims * (self.image_size // self.k) ** 2

    @classmethod
    def authorized_recipe(cls, recipe, settings: dict):
        """Crops by multiples of k only (the padding rounded up to a multiple of k; zero-padded or
        circular), flips kept: the augmentations that commute with the key."""
        if recipe.crop_padding == 0 or not any(a in recipe.augment for a in ("crop", "roll")):
            return recipe
        k = settings.get("k", 4)
        return replace(recipe, crop_padding=k * math.ceil(recipe.crop_padding / k), crop_step=k)

    @classmethod
    def from_changes(cls, changes, like):
        """Within the scheme's even and odd candidates, the top eigenvectors of the block-aligned patch
        second moment of the changes (one image gives (H/k)(W/k) patches: enough for d << that)."""
        p = blocks(changes.double(), like.k).reshape(-1, like.in_channels * like.k ** 2)
        moment = p.T @ p
        parts = [dc_basis(like.in_channels, like.k)] if like.dc else []   # public: no estimate needed
        for cand, m in zip(candidates(like.in_channels, like.k, like.fmin, like.fmax), like.split):
            if m:
                parts.append(cand @ torch.linalg.eigh(cand.T @ moment @ cand)[1].flip(1)[:, :m])
        est = cls(like.in_channels, like.image_size, k=like.k, dims=like.dims, fmin=like.fmin, fmax=like.fmax, dc=like.dc)
        est.basis.copy_(torch.cat(parts, 1).float())
        return est

    @classmethod
    def estimate(cls, published, reference, like):
        """The block-aligned patch covariance of the published images against the reference's (clean
        images when given, else the published images' stationary covariance, `stationary_covariance`),
        restricted to the scheme's even and odd candidates; in each, the top generalized eigenvectors
        (the directions of largest variance ratio, published over reference)."""
        k, c = like.k, like.in_channels
        cp = patch_covariance(published, k)
        cr = patch_covariance(reference, k) if reference is not None else stationary_covariance(published, k)
        even, odd = candidates(c, k, like.fmin, like.fmax)
        parts = [dc_basis(c, k)] if like.dc else []   # public: no estimate needed
        for cand, m in zip((even, odd), like.split):
            if m:
                # the variance ratios, not the excess: a reference of other images (or the stationary
                # model) matches the aligned statistics of D dimensions only roughly (measured in tests:
                # agreement 0.45 against 0.13 with 60 aux images, 0.54 against 0.13 with the stationary model)
                vecs = top_generalized(cand.T @ cp @ cand, cand.T @ cr @ cand, m, excess=False)[1]
                parts.append(cand @ vecs)
        est = cls(c, like.image_size, k=k, dims=like.dims, fmin=like.fmin, fmax=like.fmax, dc=like.dc)
        est.basis.copy_(torch.cat(parts, 1).float())
        return est
