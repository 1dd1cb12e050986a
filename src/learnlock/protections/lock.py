"""Learnability Lock (Peng & Chen, ICLR 2022, "Learnability Lock: Authorized Learnability Control
Through Adversarial Invertible Transformations").

Each class y gets a secret invertible transform T_y, trained to be error-minimising: a surrogate
learns the locked images so easily that a network trained on them learns the lock, not the
images. The authorized user holds the key (`LockKey`: the transforms plus the authorized network
the manifest names), inverts T_y before training (`key.prepare(published)`) and trains on images
within one grey level of the clean ones. Unlike `keyed`, where the key lives inside the network,
here the key is a preprocessing step: any network trained on the unlocked data learns.

Norm L-inf, rho (default 8/255) in [0, 1] pixel units; the lock radius is eps = floor(255 rho) / 255
(= rho for rho = k/255), so that the locked change, at most eps by construction, is never clipped
by the 8-bit projection and stays invertible. Variants (`keys/lock.py` has the maths):
  affine    x' = W_y * x + B_y per pixel and channel, W in [1 - eps/2, 1 + eps/2], B in
            [-eps/2, eps/2] (projected after every step): |x' - x| <= eps for x in [0, 1]
  residual  x' = x + eps * tanh(g_y(x)), g_y a small spectrally normalised conv net
            (torch.nn.utils.parametrizations.spectral_norm), inverted by fixed-point iteration.

Rounds, as in the reference code: (1) `train_steps` SGD steps of the surrogate (default cnn) on
the locked images, quantised as they will be published; (2) `passes` passes over the data
updating the transforms to minimise the surrogate's cross-entropy; (3) stop once the surrogate's
accuracy on the locked data reaches 1 - stop_error (0.9, as the reference), or after max_rounds
(50, as the reference). Checkpointed every round in the work folder (a killed run resumes).
Differences from the reference: the transform is trained with Adam (lr in units of the box
half-width for affine) instead of SGD lr 0.01, which at CPU sizes (a few batches per round) barely
moves W and B in the rounds available; the affine transform starts at a seeded random point of
its box, not at the identity; the surrogate is a cnn, not a ResNet-18 (cost; `--set
surrogate=resnet18` for the paper's); g has 32 hidden channels like the reference's mid_planes.

    key = NetSpec.create("cnn", 10, 3, seed=1)
    prot = LearnabilityLock(ProtectionContext([key], recipe="cpu"), variant="affine")
    prot.protect(train, "published/");  prot.issued_keys()[0].save("published.key.safetensors")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import ImageDataset
from ..device import current_device
from ..errors import LearnlockError
from ..keys.lock import VARIANTS, LockKey, lock_images, residual_lipschitz
from ..models import NetSpec, create_model, frozen, list_models
from ..recipe import Recipe
from ..training import fit
from .base import Protection, ProtectionContext, ProtectionSettings, project_quantize, register_protection
from .resumable import Checkpoint
from .surrogate import alternate_rounds


@dataclass(frozen=True)
class LockSettings(ProtectionSettings):
    variant: str = "affine"        # affine (class-wise W x + B per pixel) | residual (class-wise invertible conv block)
    surrogate: str = "cnn"         # surrogate architecture; cnn keeps 1,000 CIFAR images to minutes on a CPU
    width: int = 32                # residual: hidden channels of g (the reference's mid_planes)
    train_steps: int = 20          # surrogate SGD steps per round (the reference's I = 20)
    passes: int = 1                # passes over the data updating the transforms per round (J = 1)
    lr: float = 0.05               # surrogate SGD learning rate (momentum 0.9, wd 5e-4)
    transform_lr: float | None = None  # Adam lr of the transforms (None: 0.1 affine, in units of eps/2; 0.01 residual)
    stop_error: float = 0.1        # stop at this surrogate error on the locked data
    max_rounds: int = 50           # give up after this many rounds (reported in the manifest)
    batch_size: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.transform_lr is None:
            object.__setattr__(self, "transform_lr", 0.1 if self.variant == "affine" else 0.01)
        eps = math.floor(255 * self.rho + 1e-9) / 255
        self.require(self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}")
        self.require(eps > 0, f"rho {self.rho:.4f} is below one grey level (1/255); the lock changes whole levels")
        self.require(self.variant != "residual" or residual_lipschitz(eps) < 1,
                     f"the residual lock is invertible only for eps < 1/9 (28/255); rho {self.rho:.4f} is too large")
        self.require(self.surrogate in list_models(),
                     f"unknown surrogate {self.surrogate!r}; choose one of {list_models()}")
        self.require(self.width >= 1, "width must be >= 1")
        self.require(self.train_steps >= 0 and self.passes >= 1, "train_steps must be >= 0 and passes >= 1")
        self.require(self.lr > 0 and self.transform_lr > 0, "lr and transform_lr must be > 0")
        self.require(0 <= self.stop_error < 1, "stop_error must be in [0, 1)")
        self.require(self.max_rounds >= 1, "max_rounds must be >= 1")
        self.require(self.batch_size >= 2, "batch_size must be >= 2")


class ClassTransforms(nn.Module):
    """The trainable class-wise transforms. `tensors()` gives them in the LockKey's form (so
    training and unlocking share `lock_images`); `project()` restores the constraint after a step."""

    def __init__(self, variant: str, num_classes: int, shape: tuple[int, int, int], eps: float, width: int,
                 seed: int):
        super().__init__()
        self.variant, self.eps = variant, eps
        c = shape[0]
        # the global RNG is forked: Conv2d init and spectral_norm's power-iteration vectors draw from it
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            if variant == "affine":  # W = 1 + eps/2 a, B = eps/2 b, a and b in [-1, 1]
                self.a = nn.Parameter(torch.rand((num_classes, *shape)) * 2 - 1)
                self.b = nn.Parameter(torch.rand((num_classes, *shape)) * 2 - 1)
            else:
                sn = nn.utils.parametrizations.spectral_norm

                def convs(c_in, c_out, k):
                    return nn.ModuleList(sn(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False))
                                         for _ in range(num_classes))

                self.conv1, self.conv2, self.conv3 = convs(c, width, 3), convs(width, width, 1), convs(width, c, 3)

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.variant == "affine":
            return {"W": 1 + self.eps / 2 * self.a, "B": self.eps / 2 * self.b}
        return {name: torch.stack([m.weight for m in getattr(self, name)])
                for name in ("conv1", "conv2", "conv3")}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lock_images(self.variant, self.tensors(), self.eps, x, y)

    @torch.no_grad()
    def project(self) -> None:
        if self.variant == "affine":
            self.a.clamp_(-1, 1)
            self.b.clamp_(-1, 1)
        # residual: spectral_norm already divides each kernel by its (power-iteration) norm

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        """The final transforms, on CPU. Residual kernels are divided by their exact spectral norm
        where the power-iteration estimate left it above 1, so the key's bound holds exactly."""
        self.eval()
        out = {k: v.detach().float().cpu().contiguous() for k, v in self.tensors().items()}
        if self.variant == "residual":
            for name, t in out.items():
                sigma = torch.linalg.matrix_norm(t.double().flatten(2), ord=2).clamp_min(1.0)
                out[name] = (t.double() / sigma.view(-1, 1, 1, 1, 1)).float().contiguous()
        else:
            out["W"] = out["W"].clamp(1 - self.eps / 2, 1 + self.eps / 2)
            out["B"] = out["B"].clamp(-self.eps / 2, self.eps / 2)
        return out


@register_protection("lock")
class LearnabilityLock(Protection):
    """Learnability Lock (Peng & Chen 2022): class-wise invertible transforms, error-minimising
    against a surrogate; the authorized user inverts them with the key. See the module docstring."""

    Settings = LockSettings
    presets = {"smoke": dict(max_rounds=2, train_steps=2, batch_size=8)}
    needs_key = True
    trains_key = True
    scheme_attacks = ("lock-inverse",)
    threat = ("The hacker holds the locked images and labels and knows the lock's scheme (class-wise invertible "
              "transforms of a known family), not the transforms; it may hold clean auxiliary images of the same "
              "classes. Whoever holds the key unlocks the data.")

    def __init__(self, context: ProtectionContext | None = None, settings: LockSettings | None = None,
                 preset: str | None = None, **overrides):
        super().__init__(context, settings, preset, **overrides)
        if not all(isinstance(k, NetSpec) for k in self.authorized):
            raise LearnlockError("lock needs at least one authorized network as a NetSpec (architecture + initial "
                                 "weights), e.g. --authorized cnn --key-seed 1")
        self.keys: list[LockKey] = []
        self.log: list[dict] = []
        self.converged = None

    @property
    def eps(self) -> float:
        """The lock radius: whole grey levels, so the 8-bit projection never cuts into a locked change."""
        return math.floor(255 * self.settings.rho + 1e-9) / 255

    def device(self) -> torch.device:
        return current_device()

    def surrogate_recipe(self, round_: int) -> Recipe:
        s = self.settings
        return Recipe(name="lock-surrogate", epochs=1, batch_size=s.batch_size, optimizer="sgd", lr=s.lr,
                      momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="constant", augment="none",
                      seed=s.seed * 100_003 + round_)

    # Why not em.MinMin: its state is one additive delta per item or class, stepped by signed
    # gradients and clamped to the rho-ball, and it publishes x + delta. Here the state is a set of
    # transform parameters (W and B, or K small networks) under other constraints (a box on W, a
    # spectral norm), and the published image is a function of x; fitting that into MinMin would
    # mean overriding its private delta steps and carrying a dummy delta. So this loop is its own,
    # kept short, and trains the surrogate through the one training loop (`fit`).
    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        dev = self.device()
        x, y = data.float_images().to(dev), data.labels.to(dev)
        transform = ClassTransforms(s.variant, data.num_classes, tuple(x.shape[1:]), self.eps, s.width, s.seed).to(dev)
        model = create_model(s.surrogate, data.num_classes, data.in_channels, seed=s.seed).to(dev)
        self.keys = []
        kept = {k: v for k, v in asdict(s).items() if k != "max_rounds"}  # more rounds continue a run
        ckpt = Checkpoint(workdir, "lock-state", {"settings": kept, "data": data.fingerprint(), "method": self.name},
                          "lock")
        parts = {"transform": transform, "model": model}
        start, self.log = ckpt.restore(parts)

        def step(r):
            self._train_round(model, transform, data, x, r)
            self._transform_round(model, transform, x, y, r)
            return self._accuracy(model, transform, data, x)

        self.converged = alternate_rounds(
            start, s.max_rounds, step, lambda acc: acc >= 1 - s.stop_error, self.log,
            lambda done: ckpt.save(done, self.log, parts), "lock", self.progress)
        tensors = transform.export()
        self.keys = [LockKey(net, s.variant, self.eps, tensors) for net in self.authorized]
        return self.keys[0].lock(x, y).cpu()

    def _locked_uint8(self, transform, data, x, idx) -> torch.Tensor:
        """Items `idx` locked and projected to 8 bits, as they will be published."""
        with torch.no_grad():
            locked = transform(x[idx.to(x.device)], data.labels[idx].to(x.device))
        return project_quantize(data.images[idx], locked.cpu(), self.settings.rho)

    def _train_round(self, model, transform, data, x, r):
        s = self.settings
        if s.train_steps == 0:
            return
        transform.eval()
        g = torch.Generator().manual_seed(s.seed * 7919 + r)
        need = s.train_steps * s.batch_size
        idx = torch.cat([torch.randperm(len(data), generator=g) for _ in range(math.ceil(need / len(data)))])[:need]
        sub = ImageDataset(self._locked_uint8(transform, data, x, idx), data.labels[idx], data.classes,
                           tuple(str(i) for i in idx.tolist()), data.source)
        fit(model, sub, self.surrogate_recipe(r), progress=False)

    def _transform_round(self, model, transform, x, y, r):
        s = self.settings
        model.eval()
        transform.train()  # residual: spectral_norm refines its norm estimates while training
        opt = torch.optim.Adam(transform.parameters(), lr=s.transform_lr)
        g = torch.Generator().manual_seed(s.seed * 104_729 + r)
        try:
            with frozen(model):  # only the transform learns
                for _ in range(s.passes):
                    for b in torch.randperm(len(x), generator=g).to(x.device).split(s.batch_size):
                        loss = F.cross_entropy(model(transform(x[b], y[b]).clamp(0, 1)), y[b])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        transform.project()
        finally:
            transform.eval()

    @torch.no_grad()
    def _accuracy(self, model, transform, data, x) -> float:
        model.eval()
        transform.eval()
        correct = 0
        for b in torch.arange(len(data)).split(512):
            x_q = self._locked_uint8(transform, data, x, b).to(x.device)
            correct += (model(x_q.float().div(255)).argmax(1) == data.labels[b].to(x.device)).sum().item()
        return correct / len(data)

    # ----------------------------------------------------------------- what the user receives
    def issued_keys(self, data: ImageDataset | None = None) -> list:
        """One LockKey per authorized network (all share the transforms), once apply() trained them."""
        if not self.keys:
            raise LearnlockError("lock: the key exists only after the lock is trained (apply or protect)")
        return list(self.keys)

    def authorized_info(self, keys: list | None = None) -> dict:
        return {**super().authorized_info(keys), "unlock": "lock"}

    def manifest_extra(self) -> dict:
        return {"eps": self.eps, "rounds": len(self.log), "converged": self.converged, "log": self.log}
