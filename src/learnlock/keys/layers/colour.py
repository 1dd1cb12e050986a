"""`colour`: the key layer removes a secret k-dimensional colour subspace at every pixel.

S = {delta : delta(pixel) in span(B) at every pixel}, B a secret 3 x k orthonormal basis (k = `dims`,
1 or 2). The layer is a frozen 1x1 projection x -> (I - B B^T) x.

- Key cost: k/3 of the input (the authorized net sees a 3 - k dimensional colour image).
- Commutes exactly with crops (zero padding maps to zero), flips and any spatial augmentation.
- `luma` (None: a uniformly random direction): the removed direction's squared cosine with the
  ITU-R 601 luma axis, at a secret azimuth around it (as in `spectral`). A random direction can be
  nearly isoluminant, and grayscale then removes all of the noise (measured: BENCHMARKS.md).
- Leaks: noise in S adds variance along B at every pixel, so second-order colour statistics of
  the published images (high-pass colour covariance against natural images) point at B; a fixed
  colour projection (grayscale) keeps only the luminance part of the noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import LearnlockError
from . import KeyLayer, check_luma, cone_direction, generalized_excess, luma_basis, orthonormal, register_key_layer

# Neighbouring colour channels of natural images are strongly correlated: the attacker's prior
# for the high-pass colour covariance when no clean data are at hand.
NATURAL_CHANNEL_CORRELATION = 0.9


def colour_residual(x: torch.Tensor) -> torch.Tensor:
    """x - mean3x3(x) per channel (reflect padding): the high-pass part where the noise stands out."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def highpass_colour_cov(images: torch.Tensor) -> torch.Tensor:
    """3 x 3 covariance (float64) of per-pixel colour residuals x - mean3x3(x) of uint8 images."""
    total = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    for chunk in images.split(512):
        r = colour_residual(chunk.double() / 255)
        v = r.permute(1, 0, 2, 3).reshape(3, -1)
        total += v @ v.T
        count += v.shape[1]
    return total / max(count, 1)


def top_generalized(cp: torch.Tensor, cr: torch.Tensor, k: int, excess: bool = True):
    """The variance ratios (descending) of (cp, cr) and k orthonormal directions: the top
    eigenvectors of the excess over the reference (`generalized_excess`: exact for a rank-k excess),
    or with `excess` False (a reference known only up to scale, such as a prior) the top
    generalized eigenvectors (measured: agreement 0.83-0.90 instead of 1 on colour keys with aux)."""
    w, g, diff = generalized_excess(cp, cr)
    v = torch.linalg.eigh(diff)[1].flip(1) if excess else g
    return w, torch.linalg.qr(v[:, :k].contiguous())[0]


@register_key_layer("colour")
class ColourKey(KeyLayer):
    def __init__(self, in_channels: int, image_size: int, dims: int = 1, luma: float | None = None):
        super().__init__(in_channels, image_size)
        if in_channels != 3:
            raise LearnlockError("the colour key needs RGB images (3 channels); for grayscale data use "
                                 "the spectral family (setting family=spectral)")
        if isinstance(dims, bool) or dims not in (1, 2):
            raise LearnlockError(f"colour key: dims is the number of removed colour directions, 1 or 2; got {dims!r}")
        check_luma("colour", luma, in_channels)
        self.dims, self.luma = dims, None if luma is None else float(luma)
        basis = torch.zeros(3, dims)
        if self.drawing():
            basis = orthonormal(3, dims) if luma is None else luma_basis(self.luma, dims)
        self.register_buffer("basis", basis)

    def public_settings(self) -> dict:
        return {"dims": self.dims} if self.luma is None else {"dims": self.dims, "luma": self.luma}

    def project(self, x):
        b = self.basis.to(device=x.device, dtype=x.dtype)
        return torch.einsum("bchw,ck,dk->bdhw", x, b, b)

    def dim(self) -> int:
        return self.dims * self.image_size ** 2

    @classmethod
    def from_changes(cls, changes, like):
        """The top `dims` eigenvectors of the per-pixel colour second moment of the changes."""
        d = changes.double().permute(1, 0, 2, 3).reshape(changes.shape[1], -1)
        vecs = torch.linalg.eigh(d @ d.T)[1].flip(1)[:, :like.dims]
        est = cls(3, like.image_size, dims=like.dims, luma=like.luma)
        est.basis.copy_(torch.linalg.qr(vecs)[0].float())
        return est

    @classmethod
    def estimate(cls, published, reference, like):
        cp = highpass_colour_cov(published)
        if reference is not None:
            cr = highpass_colour_cov(reference)
        else:
            rho = NATURAL_CHANNEL_CORRELATION
            cr = (1 - rho) * torch.eye(3, dtype=torch.float64) + rho * torch.ones(3, 3, dtype=torch.float64)
        if like.luma is not None and like.dims == 1:  # the scheme states the luma share: search its cone
            vecs = cone_direction(cp, cr, like.luma)[:, None]
        else:
            vecs = top_generalized(cp, cr, like.dims, excess=reference is not None)[1]
        est = cls(3, like.image_size, dims=like.dims, luma=like.luma)
        est.basis.copy_(vecs.float())
        return est
