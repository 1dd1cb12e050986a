"""LockKey: what the authorized user of a Learnability Lock (`--method lock`) receives.

Learnability Lock (Peng & Chen, ICLR 2022) publishes every image of class y through a secret
invertible transform T_y; whoever holds the key inverts it (`prepare`, "unlock") and trains on
the restored images, everyone else trains on the locked ones. A LockKey is the authorized network
(a NetSpec: the architecture and initial weights the manifest names) plus the class-wise
transforms, in [0, 1] pixel units, eps = the lock's L-inf radius:

  affine    x' = W_y * x + B_y per pixel and channel, W in [1 - eps/2, 1 + eps/2] and B in
            [-eps/2, eps/2] (tensors W, B: K x C x H x W). Then |x' - x| = |(W - 1) x + B|
            <= eps/2 * x + eps/2 <= eps for x in [0, 1]. Inverse: x = (x' - B_y) / W_y.
  residual  x' = x + eps * tanh(g_y(x)), g_y = conv3x3 . elu . conv1x1 . elu . conv3x3 (no
            biases; tensors conv1: K x w x C x 3 x 3, conv2: K x w x w x 1 x 1, conv3:
            K x C x w x 3 x 3). |x' - x| < eps. Each kernel, reshaped to out x (in*k*k), has
            spectral norm <= 1, so a k x k convolution is at most k-Lipschitz (Tsuzuku et al.
            2018), g at most 9-Lipschitz and eps * tanh . g at most L = 9 eps < 1: a contraction,
            inverted by the fixed-point iteration x_{k+1} = x' - eps * tanh(g_y(x_k)).

Unlocking the 8-bit published image: the rounding error e (at most half a grey level per value)
comes back as at most 0.5 / (1 - eps/2) levels per pixel for `affine`, so the restored uint8 image
is within one level of the original wherever the locked value was not clipped to [0, 1]. For
`residual` the contraction bounds the error in L2, ||x_hat - x||_2 <= ||e||_2 / (1 - L); per
pixel, x_hat - x = e - (r(x_hat) - r(x)) with r = eps * tanh . g smooth, which averages the
rounding noise away, and the tests check the same one-level result. Where a locked value was
clipped (a dark pixel pushed below 0, a bright one above 1) the clip removed up to eps of
information: the affine unlock is then off by up to about 255 eps levels at that pixel; the
residual one also spreads the loss to the pixel's neighbours through g.

File: ONE safetensors file, tensors "net/<name>" (the network's state_dict) and "lock/<name>",
metadata format = "learnlock.lockkey/1", variant, eps, num_classes, in_channels, arch, kwargs,
net_fingerprint and fingerprint (sha256 over the net's fingerprint, variant, eps and the
transform tensors). Never a pickle. Saving is atomic and byte-deterministic.

    key = LockKey.load("published.key.safetensors")
    model = train_authorized(published, key, recipe)     # unlock (key.prepare), then train
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset
from ..errors import LearnlockError
from ..files import fingerprint, read_key_file, save_key_file
from ..models.netspec import FORMAT as NETSPEC_FORMAT
from ..models.netspec import NetSpec, check_fits

FORMAT = "learnlock.lockkey/1"
VARIANTS = ("affine", "residual")
NAMES = {"affine": ("B", "W"), "residual": ("conv1", "conv2", "conv3")}
G_LIPSCHITZ = 9.0  # bound on Lip(g): 3 (conv3x3) * 1 (elu) * 1 (conv1x1) * 1 (elu) * 3 (conv3x3)
_META_KEYS = ("variant", "eps", "num_classes", "in_channels", "arch", "kwargs", "net_fingerprint", "fingerprint")


def residual_lipschitz(eps: float) -> float:
    """Upper bound on the Lipschitz constant of eps * tanh(g(x)) (< 1: invertible)."""
    return G_LIPSCHITZ * eps


def residual_shift(x: Tensor, y: Tensor, tensors: dict[str, Tensor], eps: float) -> Tensor:
    """eps * tanh(g_y(x)) for each item (the residual variant's change of the image), one batch of
    convolutions per class present (on a CPU twice as fast as one grouped convolution per item)."""
    out = torch.zeros_like(x)
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        h = F.elu(F.conv2d(x[idx], tensors["conv1"][c], padding=1))
        h = F.elu(F.conv2d(h, tensors["conv2"][c]))
        out = out.index_put((idx,), eps * torch.tanh(F.conv2d(h, tensors["conv3"][c], padding=1)))
    return out


def lock_images(variant: str, tensors: dict[str, Tensor], eps: float, x: Tensor, y: Tensor) -> Tensor:
    """The locked float images T_y(x) (not clipped); `tensors` may require grad (training)."""
    if variant == "affine":
        return tensors["W"][y] * x + tensors["B"][y]
    return x + residual_shift(x, y, tensors, eps)


def unlock_images(variant: str, tensors: dict[str, Tensor], eps: float, x: Tensor, y: Tensor,
                  tol: float = 1e-6, max_iter: int = 100) -> Tensor:
    """T_y^{-1}(x') for float images x'; the residual fixed-point iteration runs until no pixel
    moves by more than `tol` ([0, 1] units)."""
    if variant == "affine":
        return (x - tensors["B"][y]) / tensors["W"][y]
    z = x.clone()
    for _ in range(max_iter):
        nxt = x - residual_shift(z, y, tensors, eps)
        moved = (nxt - z).abs().max().item() if len(z) else 0.0
        z = nxt
        if moved <= tol:
            return z
    raise LearnlockError(f"lock key: the residual inverse did not converge in {max_iter} fixed-point steps "
                         f"(last change {moved:.2e}); the key's transform is not a contraction")


def _fingerprint(net_fingerprint: str, variant: str, eps: float, tensors: dict[str, Tensor]) -> str:
    return fingerprint([part.encode() for part in (FORMAT, net_fingerprint, variant, repr(float(eps)))], tensors)


@dataclass(eq=False)  # tensors make == ambiguous; compare fingerprints instead
class LockKey:
    """The authorized network plus the class-wise lock transforms (see the module docstring).

    Validated on construction: known variant, eps in (0, 1], tensors with exactly the variant's
    names, float32, one transform per class of the network, and inside the constraint that makes
    them invertible (the affine box; spectral norms <= 1 and 9 eps < 1 for residual).
    """

    net: NetSpec
    variant: str
    eps: float  # L-inf radius of the lock, [0, 1] pixel units
    tensors: dict[str, Tensor] = field(repr=False)

    def __post_init__(self):
        if not isinstance(self.net, NetSpec):
            raise LearnlockError(f"LockKey needs the authorized network as a NetSpec, got {type(self.net).__name__}")
        if self.variant not in VARIANTS:
            raise LearnlockError(f"lock variant must be one of {VARIANTS}, got {self.variant!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps <= 1:
            raise LearnlockError(f"lock eps is an L-inf radius in (0, 1] ([0,1] pixel units), got {self.eps!r}")
        self.eps = float(self.eps)
        self.tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        self._check()

    def _check(self) -> None:
        t, want = self.tensors, NAMES[self.variant]
        if tuple(sorted(t)) != want:
            raise LearnlockError(f"a {self.variant} lock has tensors {', '.join(want)}; "
                                 f"got {', '.join(sorted(t)) or 'none'}")
        for name, v in t.items():
            if v.dtype != torch.float32 or not torch.isfinite(v).all():
                raise LearnlockError(f"lock tensor {name} must be finite float32, got {v.dtype}")
        k, c, e = self.net.num_classes, self.net.in_channels, self.eps
        if self.variant == "affine":
            w, b = t["W"], t["B"]
            if w.dim() != 4 or w.shape != b.shape or tuple(w.shape[:2]) != (k, c):
                raise LearnlockError(f"affine lock tensors must both be {k} x {c} x H x W (classes x channels of "
                                     f"{self.net.arch}), got W {tuple(w.shape)}, B {tuple(b.shape)}")
            tol = 1e-6
            if (w - 1).abs().max().item() > e / 2 + tol or b.abs().max().item() > e / 2 + tol:
                raise LearnlockError(f"affine lock outside its box (W in [1 - eps/2, 1 + eps/2], |B| <= eps/2, "
                                     f"eps {e:.4f}): not a valid lock key")
            return
        w1, w2, w3 = t["conv1"], t["conv2"], t["conv3"]
        width = w1.shape[1] if w1.dim() == 5 else -1
        shapes = {"conv1": (k, width, c, 3, 3), "conv2": (k, width, width, 1, 1), "conv3": (k, c, width, 3, 3)}
        for name, shape in shapes.items():
            if tuple(t[name].shape) != shape:
                raise LearnlockError(f"residual lock tensor {name} must be {shape} (classes x out x in x k x k), "
                                     f"got {tuple(t[name].shape)}")
        if residual_lipschitz(e) >= 1:
            raise LearnlockError(f"residual lock with eps {e:.4f}: 9 * eps >= 1, the block is not guaranteed "
                                 "invertible; use eps < 1/9 (28/255)")
        for name in ("conv1", "conv2", "conv3"):
            sigma = torch.linalg.matrix_norm(t[name].double().flatten(2), ord=2).max().item()
            if sigma > 1 + 1e-4:
                raise LearnlockError(f"residual lock tensor {name} has spectral norm {sigma:.4f} > 1: the block is "
                                     "not a contraction, so the key cannot unlock")

    # -- the network, as a NetSpec ---------------------------------------------------------

    @property
    def arch(self) -> str:
        return self.net.arch

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def in_channels(self) -> int:
        return self.net.in_channels

    @property
    def kwargs(self) -> dict:
        return self.net.kwargs

    def build(self) -> nn.Module:
        """The authorized network (as NetSpec.build)."""
        return self.net.build()

    def weights(self) -> dict[str, Tensor]:
        """The network's weights and the lock's transforms (the key's secret part)."""
        return {**{f"net.{k}": v for k, v in self.net.state.items()}, **{f"lock.{k}": v for k, v in self.tensors.items()}}

    def check_fits(self, data, role: str = "authorized network") -> None:
        check_fits(self, data, role)

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.net.fingerprint, self.variant, self.eps, self.tensors)

    # -- lock and unlock -------------------------------------------------------------------

    def _on(self, device) -> dict[str, Tensor]:
        return {k: v.to(device) for k, v in self.tensors.items()}

    def _check_images(self, images: Tensor, labels: Tensor, what: str) -> None:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise LearnlockError(f"{what}: the lock key takes {self.in_channels}-channel images, got shape "
                                 f"{tuple(images.shape)}")
        if self.variant == "affine" and tuple(images.shape[2:]) != tuple(self.tensors["W"].shape[2:]):
            raise LearnlockError(f"{what}: images are {tuple(images.shape[2:])} pixels, but this affine lock was "
                                 f"made for {tuple(self.tensors['W'].shape[2:])}")
        if len(labels) and int(labels.max()) >= self.num_classes:
            raise LearnlockError(f"{what}: labels reach {int(labels.max())}, the key has {self.num_classes} classes")

    def lock(self, x: Tensor, y: Tensor) -> Tensor:
        """Float [0, 1] images -> the locked float images (not clipped, not quantised)."""
        self._check_images(x, y, "lock")
        with torch.no_grad():
            return lock_images(self.variant, self._on(x.device), self.eps, x, y.to(x.device))

    def unlock(self, x: Tensor, y: Tensor) -> Tensor:
        """Float locked images -> the restored float images (not clipped)."""
        self._check_images(x, y, "unlock")
        with torch.no_grad():
            return unlock_images(self.variant, self._on(x.device), self.eps, x, y.to(x.device))

    def prepare(self, data: ImageDataset, batch_size: int = 256) -> ImageDataset:
        """Unlock published data with its labels: every item inverted, quantised to uint8.
        (Items a partial protection left clean are inverted too; they move by at most eps.)"""
        if data.num_classes != self.num_classes:
            raise LearnlockError(f"{data.source}: {data.num_classes} classes, the lock key has {self.num_classes}")
        self._check_images(data.images, data.labels, data.source or "data")
        out = torch.empty_like(data.images)
        for i in range(0, len(data), batch_size):
            x = data.images[i:i + batch_size].float().div_(255)
            restored = self.unlock(x, data.labels[i:i + batch_size])
            out[i:i + batch_size] = torch.round(restored.mul_(255).clamp_(0, 255)).to(torch.uint8)
        return data.with_images(out, source=f"{data.source} [unlocked]")

    # -- files -----------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False, private: bool = False) -> Path:
        """Write one safetensors file (atomically); refuses to replace a file unless overwrite.
        `private`: readable by its owner only (0600), for a key that must stay secret."""
        tensors = {f"net/{k}": v.detach().cpu().contiguous().clone() for k, v in self.net.state.items()}
        tensors.update({f"lock/{k}": v.clone() for k, v in self.tensors.items()})
        metadata = {
            "format": FORMAT, "variant": self.variant, "eps": repr(self.eps),
            "num_classes": str(self.num_classes), "in_channels": str(self.in_channels), "arch": self.arch,
            "kwargs": json.dumps(self.kwargs, sort_keys=True), "net_fingerprint": self.net.fingerprint,
            "fingerprint": self.fingerprint,
        }
        return save_key_file(path, dict(sorted(tensors.items())), metadata, overwrite, private)

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str | None = None) -> LockKey:
        """Read a file written by save(); check both fingerprints (and the expected one, if given)."""
        path = Path(path)
        flat, meta = read_key_file(
            path, "lock key file", "a lock key written by `learnlock protect --method lock`", format=FORMAT,
            required=_META_KEYS,
            other_formats={NETSPEC_FORMAT: "it is a network key (NetSpec), not a lock key: a lock key also holds "
                                           "the transform"})
        try:
            num_classes, in_channels, eps = int(meta["num_classes"]), int(meta["in_channels"]), float(meta["eps"])
            kwargs = json.loads(meta["kwargs"])
            if not isinstance(kwargs, dict) or not math.isfinite(eps):
                raise ValueError("kwargs is not a JSON object or eps is not finite")
        except ValueError as e:
            raise LearnlockError(f"{path}: corrupt lock key metadata ({e})") from None
        unknown = sorted(k for k in flat if not k.startswith(("net/", "lock/")))
        if unknown:
            raise LearnlockError(f"{path}: unexpected tensors {', '.join(unknown)}; the file is damaged")
        state = {k[4:]: v for k, v in flat.items() if k.startswith("net/")}
        tensors = {k[5:]: v for k, v in flat.items() if k.startswith("lock/")}
        try:
            net = NetSpec(meta["arch"], num_classes, in_channels, kwargs, state)
            if net.fingerprint != meta["net_fingerprint"]:
                raise LearnlockError("the network's fingerprint does not match its weights")
            key = cls(net, meta["variant"], eps, tensors)
            if key.fingerprint != meta["fingerprint"]:
                raise LearnlockError(f"fingerprint mismatch (recorded {meta['fingerprint']}, contents hash to "
                                     f"{key.fingerprint})")
        except LearnlockError as e:
            raise LearnlockError(f"{path}: {e}: the lock key was modified or corrupted after it was saved") from None
        if expected_fingerprint is not None and key.fingerprint != str(expected_fingerprint).lower():
            raise LearnlockError(f"{path}: fingerprint {key.fingerprint} differs from the expected "
                                 f"{expected_fingerprint}: this is not the lock key you expected")
        return key

