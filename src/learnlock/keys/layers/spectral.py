"""`spectral`: the key layer removes a secret colour direction at each of a secret set of spatial
frequencies (a spatio-chromatic blind spot).

In the 2-D Fourier domain (orthonormal FFT over H x W), the frequency classes are (|u|, |v|)
(a class holds a bin, its conjugate and its mirror images, so the layer maps real images to real
images and commutes with flips). A secret share `bins` of the classes whose radius lies in
[fmin, fmax] is chosen; each chosen class gets a secret orthonormal C x k colour basis B_f
(k = `dims`; on 1-channel images the whole bin is removed). S is the span of those components:
the layer is x -> x - IFFT(B_f B_f^T FFT(x)_f).

- Key cost: bins * k / C of the dimensions in the band (a spectral notch in some colours).
- Commutes exactly with flips and circular shifts; a zero-padded crop leaks a strip at the border,
  so `keyed` gives the authorized recipe circular ("roll") crops instead.
- Grayscale cannot remove the noise: the removed colour changes from frequency to frequency, so
  its luminance part survives at most of them.
- `luma` (None: uniformly random colour directions): each removed direction has this squared
  cosine with the ITU-R 601 luma axis (0.299, 0.587, 0.114), around it at a secret azimuth. Near 1,
  grayscale and JPEG (which keeps luma best) keep the noise, and at low frequencies the noise hides
  in the large natural variance of luma (second-order estimation needs many more images); the
  price is that the authorized net loses luma at the chosen frequencies (its key cost).
- Leaks: noise in S adds variance to the chosen frequency classes along B_f; per-frequency colour
  covariance against natural images (or against neighbouring frequencies) points at them.
"""

from __future__ import annotations

import math

import torch

from ...errors import LearnlockError
from . import KeyLayer, check_luma, cone_direction, luma_basis, orthonormal, register_key_layer
from .colour import top_generalized


def frequency_classes(n: int) -> torch.Tensor:
    """n x n table: the class index (|u|, |v|) -> |u| * (n // 2 + 1) + |v| of every FFT bin."""
    f = torch.arange(n)
    f = torch.minimum(f, n - f)
    return f[:, None] * (n // 2 + 1) + f[None, :]


def class_radius(n: int) -> torch.Tensor:
    f = torch.arange(n // 2 + 1, dtype=torch.float64)
    return torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).flatten()


def class_covariance(images: torch.Tensor) -> torch.Tensor:
    """Per frequency class, the C x C real covariance of the FFT coefficients of uint8 images:
    (classes x C x C), float64."""
    n, c = images.shape[-1], images.shape[1]
    cls = frequency_classes(n).flatten()
    k = (n // 2 + 1) ** 2
    total = torch.zeros(n * n, c, c, dtype=torch.float64)
    for chunk in images.split(256):
        x = torch.fft.fft2(chunk.double() / 255, norm="ortho").flatten(2)  # B C HW
        total += torch.einsum("bcp,bdp->pcd", x, x.conj()).real
    out = torch.zeros(k, c, c, dtype=torch.float64).index_add_(0, cls, total)
    count = torch.bincount(cls, minlength=k).double().clamp_min(1)
    return out / (count[:, None, None] * max(len(images), 1))


@register_key_layer("spectral")
class SpectralKey(KeyLayer):
    def __init__(self, in_channels: int, image_size: int, dims: int = 1, bins: float = 0.5,
                 fmin: float = 1.0, fmax: float | None = None, luma: float | None = None):
        super().__init__(in_channels, image_size)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= max(1, in_channels - 1):
            raise LearnlockError(f"spectral key: dims is the number of removed colour directions per frequency, "
                                 f"1..{max(1, in_channels - 1)} for {in_channels}-channel images; got {dims!r}")
        if not isinstance(bins, (int, float)) or isinstance(bins, bool) or not 0 < bins <= 1:
            raise LearnlockError(f"spectral key: bins is the share of frequency classes in the key, in (0, 1]; got {bins!r}")
        check_luma("spectral", luma, in_channels)
        n = image_size
        top = math.hypot(n // 2, n // 2)
        fmax = top if fmax is None else fmax
        if not (isinstance(fmin, (int, float)) and isinstance(fmax, (int, float)) and 0 <= fmin <= fmax):
            raise LearnlockError(f"spectral key: need 0 <= fmin <= fmax (cycles per image, up to {top:.1f}); "
                                 f"got fmin={fmin!r}, fmax={fmax!r}")
        self.dims, self.bins, self.fmin, self.fmax = dims, float(bins), float(fmin), fmax if fmax != top else None
        self.luma = None if luma is None else float(luma)
        drawing = self.drawing()
        with torch.device("cpu"):  # index tables are computed even on the meta device (shape checks)
            r = class_radius(n)
            eligible = torch.nonzero((r >= fmin) & (r <= fmax) & (r > 0)).flatten()
            if len(eligible) == 0:
                raise LearnlockError(f"spectral key: no frequency class has a radius in [{fmin}, {fmax}]")
            self.eligible = eligible
            self.count = max(1, round(self.bins * len(eligible)))
            table = torch.zeros(len(r), in_channels, dims)
            if drawing:
                chosen = eligible[torch.randperm(len(eligible))[:self.count]].sort().values
                for c in chosen.tolist():
                    table[c] = orthonormal(in_channels, dims) if luma is None else luma_basis(self.luma, dims)
            self.register_buffer("basis_map", table[frequency_classes(n)].contiguous())  # H x W x C x k

    def public_settings(self) -> dict:
        out = {"dims": self.dims, "bins": self.bins, "fmin": self.fmin, "fmax": self.fmax}
        return out if self.luma is None else {**out, "luma": self.luma}

    @classmethod
    def authorized_recipe(cls, recipe, settings: dict):
        """Circular shifts instead of zero-padded crops (those leak a strip of noise at the border)."""
        from dataclasses import replace

        return replace(recipe, augment=recipe.augment.replace("crop", "roll")) if "crop" in recipe.augment else recipe

    def project(self, x):
        if x.shape[-2:] != self.basis_map.shape[:2]:
            raise LearnlockError(f"spectral key made for {self.image_size} x {self.image_size} images, "
                                 f"got {tuple(x.shape[-2:])}")
        # real FFT: the projection keeps the conjugate symmetry, so the half spectrum suffices
        # (2x faster than the full one; the min-min projects at every noise step)
        spec = torch.fft.rfft2(x.float(), norm="ortho")                       # B C H W'
        b = self.basis_map[:, :spec.shape[-1]].permute(3, 2, 0, 1).to(x.device)  # k C H W'
        coef = (spec.unsqueeze(1) * b).sum(2)                                  # B k H W'
        out = (coef.unsqueeze(2) * b).sum(1)                                   # B C H W'
        return torch.fft.irfft2(out, s=tuple(x.shape[-2:]), norm="ortho").to(x.dtype)

    def dim(self) -> int:
        return int((self.basis_map.abs().sum((2, 3)) > 0).sum()) * self.dims

    def chosen_classes(self) -> torch.Tensor:
        flat = self.basis_map.flatten(0, 1).abs().sum((1, 2)) > 0
        return torch.unique(frequency_classes(self.image_size).flatten()[flat])

    @classmethod
    def estimate(cls, published, reference, like):
        """Rank the eligible frequency classes by their top generalized eigenvalue of the published
        colour covariance against the reference (clean data if given, else the mean of the quieter half
        of the published classes in the same ring of radius), keep as many as the scheme's `bins` says, each with
        its top-k generalized eigenvectors."""
        n, c = like.image_size, like.in_channels
        cp = class_covariance(published)
        r = class_radius(n)
        if reference is not None:
            cr = class_covariance(reference)
        else:
            cr = torch.zeros_like(cp)
            for i in like.eligible.tolist():
                ring = like.eligible[(r[like.eligible] - r[i]).abs() <= 1.0]
                power = cp[ring].diagonal(dim1=1, dim2=2).sum(1)
                quiet = ring[power <= power.median()]  # the lower half: robust to the keyed classes in it
                cr[i] = cp[quiet].mean(0)
        scores, bases = {}, {}
        for i in like.eligible.tolist():
            if like.luma is not None and like.dims == 1:  # the scheme states the luma share: search its cone
                v = cone_direction(cp[i], cr[i], like.luma)[:, None]
                w = (v.T @ cp[i] @ v).flatten() / (v.T @ cr[i] @ v).flatten().clamp_min(1e-30)
            else:
                w, v = top_generalized(cp[i], cr[i], like.dims)
            scores[i], bases[i] = float(w[:like.dims].sum()), v
        keep = sorted(scores, key=scores.get, reverse=True)[:like.count]
        est = cls(c, n, dims=like.dims, bins=like.bins, fmin=like.fmin, fmax=like.fmax, luma=like.luma)
        table = torch.zeros(len(r), c, like.dims)
        for i in keep:
            table[i] = bases[i].float()
        est.basis_map.copy_(table[frequency_classes(n)])
        est.scores = scores
        return est
