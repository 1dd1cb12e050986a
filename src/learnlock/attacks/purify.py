"""Diffusion purification of the published images, with a DDPM trained on clean auxiliary data.

Two attacks, both `transform`s of the training images (the classifier then trains through the
one loop, `Attack.train`):

* ``purify-diffpure`` -- DiffPure (Nie et al., "Diffusion Models for Adversarial Purification",
  ICML 2022): diffuse each published image x_p to level t* with q(x_t* | x_0 = x_p), then run the
  DDPM reverse process from t* to 0. The added noise drowns the small protective perturbation;
  the denoiser, trained on clean data, brings back a clean-looking image.
* ``purify`` -- LE (Jiang et al., "Unlearnable Examples Give a False Sense of Security:
  Piercing through Unexploitable Data with Learnable Examples", ACM MM 2023): the same, with a
  "joint-conditional" guidance term at every reverse step that keeps the sample near x_p, so the
  semantics survive while the perturbation is removed. At step t the UNet's epsilon gives
  x0_hat(x_t); the step is moved down the gradient (w.r.t. x_t) of a distance D(x0_hat, x_p):
  pixel MSE while t > t_switch (large t: coarse structure), and a perceptual distance for
  t <= t_switch (small t: details), as in LE's code (MSE above the midpoint of its 20 steps,
  LPIPS below).

Perceptual distance, a documented substitute: LE uses LPIPS, whose weights cannot be downloaded
here. We use D = 1 - cos(E(x0_hat), E(x_p)) with E the offline, ImageNet-pretrained
EfficientNet-Lite0 of `learnlock.encoders` (unit-norm pooled features; settings `encoder`,
`encoder_resolution`). Like LPIPS it compares deep features of a frozen ImageNet network; unlike
LPIPS it compares one pooled vector, not calibrated per-layer spatial maps.

Threat model: the attacker holds the published (protected) images and an auxiliary clean set
(`context.aux`, an ImageDataset disjoint from the protected one, with the same channels and
size), and trains an unconditional DDPM on the auxiliary set only. Labels are not used.

DDPM (`learnlock.attacks.ddpm`): diffusers' `UNet2DModel` (block_out_channels = `channels`,
`layers_per_block`, optional self-attention at the lowest resolution) and `DDPMScheduler`
(epsilon prediction, linear betas 0.1/T .. 20/T, DDPM's 1e-4 .. 0.02 at T = 1000). Trained through
the one loop (`training.fit`) with Adam and the epsilon MSE on the aux images scaled to [-1, 1],
random horizontal flips, gradient norm clipped to 1. Any H x W works (reflect-padded to the
UNet's multiple and cropped back).

Timesteps: t* and t_switch count in DDPM's 1-based convention (x_t has ᾱ_t = prod_{s<=t}
(1 - beta_s)); diffusers' timestep index is t - 1. Purification runs exactly t* reverse steps,
as DiffPure's code does; LE's code uses t* = 20 repeated for 4 rounds (`rounds`).

Cache: with `context.workdir`, the trained DDPM is kept in workdir/ddpm/<key>/ (layout and key
in `learnlock.attacks.ddpm`); audit cells that share the aux set and DDPM settings share it.
`attack.ddpm_report` holds the final training loss, held-out denoising errors at a few t, the
cache path, and (when `samples` > 0 and workdir is set) a PNG grid of unconditional samples.

Defaults: T = 1000, t* = 100 (DiffPure's 0.1 T), one round, channels (32, 64, 64), 2000 Adam
steps of 32 images at lr 2e-4, guidance 0.1 (pixel) and 0.1 (perceptual) with t_switch = t*/2.
Shapes: published and aux images uint8 N x C x H x W, C = 1 or 3; the output has the input's
shape, labels and ids. Same seed and batch size on a CPU: same bytes.

    attack = get_attack("purify")(t_star=100)
    model = attack.train(published, "cnn", seed=1, recipe=RECIPES["cpu"],
                         context=AttackContext(aux=clean_aux, workdir=Path("runs")))

An honest note on scale: the defaults are sized for a 2-core CPU, so the DDPM is small (about
1M parameters) and briefly trained (minutes, not the ~800k steps of DDPM's CIFAR-10 model); its
samples are blurry and its purification weaker than the papers'. On a GPU raise `channels`
(e.g. (128, 256, 256, 256)), `layers_per_block` (2), `attention`, `train_steps` (1e5 and up)
and `train_batch_size` (128). Purification costs t* * rounds UNet evaluations per image
(about 3x that with guidance, which back-propagates through the UNet).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..errors import LearnlockError
from . import register_attack
from .base import Attack, AttackContext, AttackSettings
from .ddpm import DDPMConfig, cache_key, load_or_train, make_scheduler, predict_eps, to_model, to_uint8

MIN_T = 50                       # betas 0.1/T .. 20/T stay below 0.4 from here on
MIN_ENCODER_RESOLUTION = 16      # the encoders downsample by 32 (learnlock.encoders.base)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class DiffPureSettings(AttackSettings):
    # diffusion process
    num_train_timesteps: int = 1000    # T, steps of the forward process (linear betas 0.1/T .. 20/T)
    t_star: int = 100                  # diffusion depth in steps of T (1-based): x_p -> x_t*, then t* reverse steps
    rounds: int = 1                    # diffuse + denoise repetitions, each from the previous output (LE's code: 4)
    batch_size: int = 64               # images per purification batch
    # DDPM, trained on context.aux
    channels: tuple[int, ...] = (32, 64, 64)   # UNet block_out_channels, one per resolution level
    layers_per_block: int = 1          # ResNet blocks per level
    attention: bool = False            # self-attention at the lowest resolution and in the middle block
    train_steps: int = 2000            # Adam steps
    train_batch_size: int = 32         # aux images per step (drawn with replacement), >= 2
    lr: float = 2e-4                   # Adam learning rate, constant
    flip: bool = True                  # random horizontal flips of the aux images during training
    holdout: int = 128                 # aux images kept out of training for the report (at most 10% of aux)
    samples: int = 16                  # unconditional samples in workdir/ddpm/<key>/samples.png (0: none)
    seed: int = 0                      # DDPM init, its training draws, and the purification noise

    def check(self):
        ints = ("num_train_timesteps", "t_star", "rounds", "batch_size", "layers_per_block", "train_steps",
                "train_batch_size", "holdout", "samples", "seed")
        for name in ints:
            v = getattr(self, name)
            self.require(_is_int(v), f"{name} must be an integer, got {v!r}")
        T = self.num_train_timesteps
        self.require(T >= MIN_T, f"num_train_timesteps (T) must be >= {MIN_T}, got {T}")
        self.require(1 <= self.t_star <= T - 1,
                     f"t_star is a diffusion depth in steps of T = {T}; it must be in [1, {T - 1}], got "
                     f"{self.t_star} (DiffPure uses 0.1 T = {T // 10})")
        for name in ("rounds", "batch_size", "layers_per_block", "train_steps"):
            self.require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        self.require(self.train_batch_size >= 2, f"train_batch_size must be >= 2 images, got {self.train_batch_size}")
        self.require(self.holdout >= 0, f"holdout must be >= 0 images, got {self.holdout}")
        self.require(0 <= self.samples <= 256, f"samples must be in [0, 256], got {self.samples}")
        self.require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        self.require(self.lr > 0,
                     f"lr is Adam's learning rate and must be a number > 0, got {self.lr!r}")
        ch = self.channels
        self.require(isinstance(ch, (tuple, list)) and 1 <= len(ch) <= 6 and all(_is_int(c) and c >= 1 for c in ch),
                     f"channels are the UNet's block_out_channels: 1 to 6 positive integers, e.g. (32, 64, 64); "
                     f"got {ch!r}")

    def ddpm(self) -> DDPMConfig:
        """The settings the trained DDPM depends on (its cache key holds them)."""
        return DDPMConfig(**{f.name: getattr(self, f.name) for f in fields(DDPMConfig)})


@dataclass(frozen=True)
class PurifySettings(DiffPureSettings):
    guidance_pixel: float = 0.1        # pixel-MSE guidance, per step, in units of the step's noise std
    guidance_perceptual: float = 0.1   # perceptual guidance, same units
    t_switch: int | None = None        # pixel guidance for t > t_switch, perceptual for t <= t_switch (None: t*/2)
    encoder: str = "efficientnet-lite0"   # learnlock encoder of the perceptual distance (LPIPS substitute)
    encoder_resolution: int = 32       # pixels the encoder resizes to

    def check(self):
        super().check()
        for name in ("guidance_pixel", "guidance_perceptual"):
            v = getattr(self, name)
            self.require(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                         f"{name} is a guidance scale (step noise std units) and must be >= 0, got {v!r}")
        if self.t_switch is not None:
            self.require(_is_int(self.t_switch) and 0 <= self.t_switch <= self.t_star,
                         f"t_switch must be an integer in [0, t_star = {self.t_star}] (0: pixel guidance only, "
                         f"t_star: perceptual only) or None for t_star // 2, got {self.t_switch!r}")
        self.require(_is_int(self.encoder_resolution) and self.encoder_resolution >= MIN_ENCODER_RESOLUTION,
                     f"encoder_resolution must be an integer >= {MIN_ENCODER_RESOLUTION} pixels, "
                     f"got {self.encoder_resolution!r}")
        from ..encoders import list_encoders

        self.require(self.encoder in list_encoders(),
                     f"unknown encoder {self.encoder!r}; choose one of: {', '.join(list_encoders())}")

    @property
    def switch(self) -> int:
        return self.t_star // 2 if self.t_switch is None else self.t_switch


# -- the attacks ----------------------------------------------------------------------------


# The smoke preset of both attacks: tiny settings that run in seconds on a CPU (the tests and
# bench/gpu_smoke.py); results mean nothing. A DDPM of ~40k parameters, 20 Adam steps; T = 50 (the
# smallest allowed) so that a sample grid takes 50 UNet calls.
SMOKE = dict(channels=(8, 16), train_steps=20, train_batch_size=8, num_train_timesteps=50, t_star=3, batch_size=4,
             samples=0)


@register_attack("purify-diffpure")
class DiffPure(Attack):
    """DiffPure with a DDPM trained on the auxiliary clean set; see the module docstring."""

    Settings = DiffPureSettings
    presets = {"smoke": SMOKE}
    needs = ("aux",)

    def __init__(self, settings: AttackSettings | None = None, **overrides):
        super().__init__(settings, **overrides)
        self.ddpm_report: dict = {}
        self._ddpm: tuple[str, object] | None = None   # (cache key, UNet) of the last DDPM used

    def report(self) -> dict | None:
        return self.ddpm_report or None

    def ddpm(self, aux: ImageDataset, context: AttackContext):
        """The DDPM for this aux set and these settings: from memory, from the workdir cache, or
        trained now. Returns (unet in eval mode with frozen weights, scheduler); sets ddpm_report."""
        s = self.settings
        config = s.ddpm()
        key = cache_key(aux, config)
        scheduler = make_scheduler(s.num_train_timesteps)
        if self._ddpm is not None and self._ddpm[0] == key:
            self.ddpm_report["cached"] = True
            return self._ddpm[1], scheduler
        unet, self.ddpm_report = load_or_train(aux, config, context.workdir, s.samples, context.progress)
        self._ddpm = (key, unet)
        return unet, scheduler

    # -- purification -------------------------------------------------------------------------

    def guidance(self, device):
        """Per-batch guidance factory, or None (DiffPure: no guidance)."""
        return None

    def transform(self, data: ImageDataset, context: AttackContext) -> ImageDataset:
        self.check_context(context)
        aux = context.aux
        if aux.images.shape[1:] != data.images.shape[1:]:
            raise LearnlockError(
                f"attack {self.name!r}: the auxiliary images ({aux.source or 'aux'}) are C x H x W = "
                f"{' x '.join(map(str, aux.images.shape[1:]))} but the published images are "
                f"{' x '.join(map(str, data.images.shape[1:]))}; the DDPM trained on aux must see images of the "
                "same channels and size (use an auxiliary split of the same dataset)")
        if len(aux) < 2:
            raise LearnlockError(f"attack {self.name!r}: the auxiliary set needs at least 2 images, got {len(aux)}")
        unet, scheduler = self.ddpm(aux, context)
        start = time.perf_counter()
        images = self.purify_images(data.images, unet, scheduler, context.progress)
        change = (images.float() - data.images.float()).abs().mean().item() if len(data) else 0.0
        self.ddpm_report["purification"] = {
            "attack": self.name, "images": len(data), "t_star": self.settings.t_star, "rounds": self.settings.rounds,
            "seconds": round(time.perf_counter() - start, 2),
            "mean_abs_change": change,   # mean |purified - published| in 0..255 pixel units
        }
        return data.with_images(images, source=f"{data.source} purified")

    def purify_images(self, images: torch.Tensor, unet, scheduler, progress: bool = True) -> torch.Tensor:
        """uint8 N x C x H x W -> purified uint8 N x C x H x W (CPU). Noise from one CPU generator
        seeded with settings.seed, drawn batch after batch."""
        s = self.settings
        device = next(unet.parameters()).device
        gen = torch.Generator().manual_seed(s.seed)
        guide = self.guidance(device)
        abar = scheduler.alphas_cumprod
        # std of the noise each reverse step adds ("fixed small": the posterior variance; 0 at t = 1)
        prev = torch.cat([torch.ones(1), abar[:-1]])
        sigma = (scheduler.betas * (1 - prev) / (1 - abar)).sqrt()
        out = torch.empty_like(images)
        batches = math.ceil(len(images) / s.batch_size)
        bar = tqdm(total=batches * s.rounds * s.t_star, desc=f"{self.name} (t*={s.t_star})", unit="step",
                   disable=not progress, leave=False, dynamic_ncols=True)
        try:
            for i in range(0, len(images), s.batch_size):
                x_p = to_model(images[i:i + s.batch_size], device)
                target = guide(x_p) if guide is not None else None
                x = x_p
                for _ in range(s.rounds):
                    a = abar[s.t_star - 1].item()
                    noise = torch.randn(x.shape, generator=gen).to(device)
                    x = math.sqrt(a) * x + math.sqrt(1 - a) * noise   # q(x_t* | x_0)
                    for t in range(s.t_star, 0, -1):
                        x = self._reverse_step(unet, scheduler, x, t, sigma[t - 1].item(), target, gen)
                        bar.update(1)
                    x = x.clamp(-1, 1)
                out[i:i + len(x)] = to_uint8(x)
        finally:
            bar.close()
        return out

    def _reverse_step(self, unet, scheduler, x, t: int, sigma: float, target, gen):
        """One DDPM reverse step from x_t (1-based t) to x_{t-1}, guided when `target` is set."""
        index = t - 1
        scale = target.scale(t) if target is not None else 0.0
        if scale == 0 or sigma == 0:
            with torch.no_grad():
                eps = predict_eps(unet, x, index)
            return scheduler.step(eps, index, x, generator=gen).prev_sample
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = predict_eps(unet, x_in, index)
            a = scheduler.alphas_cumprod[index].item()
            x0_hat = (x_in - math.sqrt(1 - a) * eps) / math.sqrt(a)
            grad = torch.autograd.grad(target.distance(x0_hat, t).sum(), x_in)[0]
        x_prev = scheduler.step(eps.detach(), index, x, generator=gen).prev_sample
        # Guidance scaling. Guided diffusion (Dhariwal & Nichol 2021) shifts the mean of each
        # reverse step by its covariance times the gradient, so the pull fades where the
        # step is nearly deterministic. The raw gradients of pixel MSE and of 1 - cos in a
        # 1280-d feature space differ by orders of magnitude (and with image size and encoder
        # resolution), so we normalise each image's gradient to unit RMS per pixel and move
        # x_{t-1} by scale * sigma_t along it: `scale` is then the guidance displacement in units
        # of the noise std that this step injects (0.1: a tenth of it), the same meaning for
        # both distances, and zero at the last step (sigma_1 = 0), which stays unguided.
        rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
        return x_prev - scale * sigma * grad / rms[:, None, None, None]


class _Target:
    """LE's joint-conditional distance to one batch of published images x_p: pixel MSE for
    t > t_switch, 1 - cos of encoder features for t <= t_switch."""

    def __init__(self, x_p: torch.Tensor, settings: PurifySettings, encoder):
        self.x_p = x_p
        self.s = settings
        self.encoder = encoder
        self.features = None
        if encoder is not None:
            with torch.no_grad():
                self.features = encoder((x_p + 1) / 2)

    def scale(self, t: int) -> float:
        """Guidance scale at step t (1-based); 0 means an unguided step."""
        if t > self.s.switch:
            return float(self.s.guidance_pixel)
        return float(self.s.guidance_perceptual) if self.encoder is not None else 0.0

    def distance(self, x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        """Per-image distance between x0_hat (float in [-1, 1]) and x_p at step t (1-based)."""
        if t > self.s.switch:
            return (x0_hat - self.x_p).pow(2).flatten(1).mean(1)
        return 1 - (self.encoder((x0_hat + 1) / 2) * self.features).sum(1)


@register_attack("purify")
class Purify(DiffPure):
    """LE: DiffPure plus pixel / perceptual guidance towards the published image; see the module docstring."""

    Settings = PurifySettings
    presets = {"smoke": SMOKE}

    def __init__(self, settings: AttackSettings | None = None, **overrides):
        super().__init__(settings, **overrides)
        self._encoder = None

    def guidance(self, device):
        s = self.settings
        encoder = None
        if s.guidance_perceptual > 0 and s.switch > 0:
            if self._encoder is None or self._encoder.device != torch.device(device):
                from ..encoders import create_encoder

                self._encoder = create_encoder(s.encoder, resolution=s.encoder_resolution, device=device)
            encoder = self._encoder
        if s.guidance_pixel == 0 and encoder is None:
            return None
        return lambda x_p: _Target(x_p, s, encoder)


__all__ = ["DiffPure", "DiffPureSettings", "Purify", "PurifySettings"]
