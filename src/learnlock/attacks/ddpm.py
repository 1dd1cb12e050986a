"""A small unconditional DDPM (Ho et al. 2020) via diffusers, trained on clean images and cached.

diffusers' `UNet2DModel` and `DDPMScheduler` (epsilon prediction, "fixed small" variance, x0
clipped to [-1, 1], linear betas 0.1/T .. 20/T: DDPM's 1e-4 .. 0.02 at T = 1000). Pixels are uint8
outside, float in [-1, 1] inside; any H x W works (reflect-padded to the UNet's multiple and
cropped back). `train_ddpm` trains through learnlock's one loop (`training.fit`); `load_or_train`
gives the DDPM of an image set and a `DDPMConfig`, from the cache when it can.

Cache: workdir/ddpm/<key[:16]>/ holds diffusion_pytorch_model.safetensors and config.json
(diffusers' names, so `UNet2DModel.from_pretrained` loads it), samples.png, and report.json,
written last, which marks a complete entry. The key hashes CACHE_FORMAT, the diffusers version,
the config and the images; weights are read back with safetensors only.

    unet, report = load_or_train(aux, DiffPureSettings().ddpm(), workdir=Path("runs/work"))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageDataset
from ..device import current_device
from ..files import atomic_write_bytes, atomic_write_json
from ..recipe import Recipe
from ..training import Callback, fit

log = logging.getLogger(__name__)

# Bump when the cache layout or the training procedure changes. 2: trained through `fit`
# (its batch draws, and timesteps and noise from a generator of their own).
CACHE_FORMAT = 2
WEIGHTS = "diffusion_pytorch_model.safetensors"   # diffusers' file names, so from_pretrained works
CONFIG = "config.json"
REPORT = "report.json"           # written last: its presence marks a complete cache entry
SAMPLES = "samples.png"
REPORT_T_FRACTIONS = (0.05, 0.1, 0.25, 0.5)   # noise levels (fractions of T) of the denoising report


@dataclass(frozen=True)
class DDPMConfig:
    """Everything a trained DDPM depends on besides its images (all of it is in the cache key).
    `learnlock.attacks.purify.DiffPureSettings` checks the values and gives the defaults."""

    num_train_timesteps: int      # T, steps of the forward process
    channels: tuple[int, ...]     # UNet block_out_channels, one per resolution level
    layers_per_block: int         # ResNet blocks per level
    attention: bool               # self-attention at the lowest resolution and in the middle block
    train_steps: int              # Adam steps
    train_batch_size: int         # images per step, drawn with replacement
    lr: float                     # Adam learning rate, constant
    flip: bool                    # random horizontal flips during training
    holdout: int                  # images kept out of training for the report (at most 10%)
    seed: int                     # init, training draws, report and sample noise


def build_unet(config: DDPMConfig, in_channels: int, size: tuple[int, int]):
    """An untrained diffusers UNet2DModel for C x H x W images (padded to a multiple of
    2**(levels - 1) inside `predict_eps`)."""
    from diffusers import UNet2DModel

    ch = tuple(config.channels)
    levels = len(ch)
    attn = config.attention
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D" if attn else "DownBlock2D",)
    up = ("AttnUpBlock2D" if attn else "UpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    m = 2 ** (levels - 1)
    sample_size = [math.ceil(s / m) * m for s in size]
    return UNet2DModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=ch, layers_per_block=config.layers_per_block,
        down_block_types=down, up_block_types=up,
        add_attention=attn, attention_head_dim=ch[-1],   # one head (lowest-resolution width)
        norm_num_groups=math.gcd(32, *ch),               # GroupNorm groups must divide every width
    )


def make_scheduler(num_train_timesteps: int):
    from diffusers import DDPMScheduler

    T = num_train_timesteps
    return DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=0.1 / T, beta_end=20.0 / T,
                         variance_type="fixed_small", clip_sample=True, prediction_type="epsilon")


def predict_eps(unet, x: torch.Tensor, t) -> torch.Tensor:
    """The UNet's epsilon for x_t (B x C x H x W, any H, W) at diffusers timestep index t (int or
    B tensor): reflect-pad to a multiple of 2**(levels - 1), run, crop back."""
    h, w = x.shape[-2:]
    m = 2 ** (len(unet.config.block_out_channels) - 1)
    ph, pw = (-h) % m, (-w) % m
    top, left = ph // 2, pw // 2
    if ph or pw:
        # reflect needs each pad narrower than the side; tiny images fall back to edge replication
        mode = "reflect" if max(top, ph - top) < h and max(left, pw - left) < w else "replicate"
        x = F.pad(x, (left, pw - left, top, ph - top), mode=mode)
    if not torch.is_tensor(t):
        t = torch.full((len(x),), int(t), dtype=torch.long, device=x.device)
    return unet(x, t.to(x.device)).sample[..., top:top + h, left:left + w]


def to_model(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 -> float in [-1, 1] on device."""
    return images.to(device).float().div_(127.5).sub_(1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> uint8 on the CPU (clamped, rounded)."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round_().to("cpu", torch.uint8)


# -- training, through training.fit -----------------------------------------------------------


class EpsilonError(nn.Module):
    """A UNet as `fit` trains it: forward takes clean images in [0, 1] (B x C x H x W), draws a
    timestep and Gaussian noise per image, and returns each image's epsilon MSE, B x 1 (the
    "logits" of a one-class set). The draws come from its own generator on the batch's device, seeded with
    seed + 3: apart from fit's batch draws (seed), the report's (seed + 1) and the samples' (seed + 2)."""

    def __init__(self, unet, scheduler, seed: int):
        super().__init__()
        self.unet = unet
        self.abar = scheduler.alphas_cumprod
        self.draw_seed = seed + 3
        self.gen = None  # made at the first batch, on its device: no host draw per step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x * 2 - 1
        if self.gen is None:
            self.gen = torch.Generator(device=x.device).manual_seed(self.draw_seed)
            self.abar = self.abar.to(x.device)
        t = torch.randint(len(self.abar), (len(x),), generator=self.gen, device=x.device)
        noise = torch.randn(x0.shape, generator=self.gen, device=x.device)
        a = self.abar[t][:, None, None, None]
        eps = predict_eps(self.unet, a.sqrt() * x0 + (1 - a).sqrt() * noise, t)   # x_t ~ q(x_t | x_0)
        return (eps - noise).pow(2).flatten(1).mean(1, keepdim=True)


class _DDPMSteps(Callback):
    """DDPM training's loss (the batch mean of EpsilonError; each step's value kept) and hooks."""

    def __init__(self):
        self.losses: list[torch.Tensor] = []

    def __call__(self, err, x, y):
        value = err.mean()
        self.losses.append(value.detach())
        return value

    def on_fit_start(self, model, recipe):
        model.gen.manual_seed(model.draw_seed)   # fit's shape check has drawn once; training starts afresh

    def on_backward(self, model, step):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


def train_ddpm(unet, scheduler, data: ImageDataset, config: DDPMConfig, device="cpu",
               progress: bool = True) -> list[float]:
    """Train `unet` in place on `data` (uint8; labels unused) with the epsilon MSE, through the one
    loop: config.train_steps Adam steps at the constant config.lr on config.train_batch_size images
    drawn with replacement, flipped at random with config.flip, gradient norm clipped to 1.
    Returns every step's loss. On a CPU the draws are those of every earlier CPU run; on a GPU they come from the GPU's generator."""
    recipe = Recipe(name="ddpm", epochs=1, batch_size=config.train_batch_size, optimizer="adam", lr=config.lr,
                    weight_decay=0.0, schedule="constant", augment="flip" if config.flip else "none",
                    seed=config.seed)
    # one class: the DDPM is unconditional, and fit's shape check then expects B x 1 outputs
    images = ImageDataset(data.images, torch.zeros(len(data), dtype=torch.long), ("image",), data.ids, data.source)
    steps = _DDPMSteps()
    fit(EpsilonError(unet, scheduler, config.seed), images, recipe, callbacks=[steps], loss=steps,
        progress=progress, desc=f"DDPM on aux ({len(data)} images)", steps=config.train_steps)
    return torch.stack(steps.losses).tolist()


@torch.no_grad()
def denoising_report(unet, scheduler, images: torch.Tensor, seed: int, batch_size: int = 64) -> list[dict]:
    """Per noise level t (1-based, REPORT_T_FRACTIONS of T): the epsilon MSE (1.0 = predicting 0),
    and in [0, 1] pixel units squared the MSE of the DDPM's one-step x0 estimate and of the
    plain rescaled noisy image x_t / sqrt(ᾱ_t) (the baseline the DDPM should beat)."""
    T = scheduler.config.num_train_timesteps
    ts = sorted({max(1, round(f * T)) for f in REPORT_T_FRACTIONS})
    gen = torch.Generator().manual_seed(seed + 1)
    rows = []
    for t in ts:
        abar = scheduler.alphas_cumprod[t - 1].item()
        sums = {"eps_mse": 0.0, "x0_mse": 0.0, "noisy_mse": 0.0}
        for i in range(0, len(images), batch_size):
            x0 = images[i:i + batch_size]
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise
            eps = predict_eps(unet, xt, t - 1)
            x0_hat = ((xt - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)
            naive = (xt / math.sqrt(abar)).clamp(-1, 1)
            sums["eps_mse"] += F.mse_loss(eps, noise, reduction="sum").item()
            sums["x0_mse"] += F.mse_loss(x0_hat, x0, reduction="sum").item() / 4   # [-1,1] -> [0,1] units
            sums["noisy_mse"] += F.mse_loss(naive, x0, reduction="sum").item() / 4
        count = images.numel()
        rows.append({"t": t, **{k: v / count for k, v in sums.items()}})
    return rows


@torch.no_grad()
def sample(unet, scheduler, n: int, shape: tuple[int, int, int], seed: int, device) -> torch.Tensor:
    """n unconditional samples (float in [-1, 1], n x C x H x W) with the full T-step reverse process."""
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn((n, *shape), generator=gen).to(device)
    for i in reversed(range(scheduler.config.num_train_timesteps)):
        x = scheduler.step(predict_eps(unet, x, i), i, x, generator=gen).prev_sample
    return x


# -- the cache --------------------------------------------------------------------------------


def cache_key(images: ImageDataset, config: DDPMConfig) -> str:
    """sha256 of the cache format, the diffusers version, the config (seed included) and the
    images (shape, pixels, ids): any change trains a new DDPM."""
    import diffusers

    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "diffusers": diffusers.__version__,
                         "ddpm": asdict(config), "aux": images.fingerprint()}, sort_keys=True).encode())
    return h.hexdigest()


def load_or_train(images: ImageDataset, config: DDPMConfig, workdir: Path | None = None, samples: int = 0,
                  progress: bool = True):
    """The DDPM of `images` and `config`: from workdir/ddpm/<key[:16]>/ when it holds this key,
    else trained now (and saved there with a workdir). With `samples` and a workdir, a grid of
    that many unconditional samples goes beside it. Returns (UNet in eval mode with frozen
    weights, its report: training losses, denoising errors, cache folder)."""
    key = cache_key(images, config)
    folder = Path(workdir) / "ddpm" / key[:16] if workdir is not None else None
    device = current_device()
    loaded = load_entry(folder, key, config, images) if folder is not None else None
    unet, report = loaded if loaded is not None else train_entry(images, config, key, folder, device, progress)
    unet.to(device).requires_grad_(False)
    if folder is not None and samples and report.get("samples") != samples:
        save_samples(unet, images, config, folder, samples, report)
        atomic_write_json(folder / REPORT, report)
    return unet.eval(), report


def load_entry(folder: Path, key: str, config: DDPMConfig, images: ImageDataset):
    """(UNet on the CPU, report) from a complete cache entry for `key`, else None."""
    if not (folder / REPORT).is_file() or not (folder / WEIGHTS).is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        report = json.loads((folder / REPORT).read_text())
        if report.get("cache_key") != key:
            return None
        unet = build_unet(config, images.in_channels, images.image_size)
        unet.load_state_dict(load_file(folder / WEIGHTS, device="cpu"), strict=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:   # unreadable entry: train afresh
        log.warning("ignoring the DDPM cache in %s (%s); training a new DDPM", folder, e)
        return None
    log.info("loaded the cached DDPM from %s", folder)
    report = {**report, "cached": True, "folder": str(folder)}
    if report.get("samples_png"):
        report["samples_png"] = str(folder / SAMPLES)
    return unet, report


def train_entry(images: ImageDataset, config: DDPMConfig, key: str, folder: Path | None, device, progress: bool = True):
    """Train a DDPM on `images` less a held-out tenth (at most config.holdout), measure it on the
    held-out images, and save it to `folder` (None: not saved). Returns (UNet, report)."""
    n = len(images)
    n_hold = min(config.holdout, n // 10)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    hold, kept = perm[:n_hold].sort().values, perm[n_hold:].sort().values
    with torch.random.fork_rng(devices=[]):   # seeded init without touching the global RNG
        torch.random.default_generator.manual_seed(config.seed)  # CPU only: manual_seed would reseed CUDA too
        unet = build_unet(config, images.in_channels, images.image_size)
    scheduler = make_scheduler(config.num_train_timesteps)
    start = time.perf_counter()
    losses = train_ddpm(unet, scheduler, images.subset(kept), config, device, progress)
    seconds = time.perf_counter() - start
    unet.requires_grad_(False)
    tail = losses[-max(1, len(losses) // 10):]
    eval_images = to_model(images.images[hold if n_hold else kept[:128]], device)
    every = max(1, len(losses) // 50)
    report = {
        "cache_key": key,
        "cached": False,
        "folder": str(folder) if folder is not None else None,
        "device": str(device),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "aux_images": n,
        "train_images": len(kept),
        "settings": asdict(config),
        "train_seconds": round(seconds, 2),
        "final_loss": sum(tail) / len(tail),   # mean epsilon MSE over the last 10% of steps
        "loss_curve": [sum(losses[i:i + every]) / len(losses[i:i + every]) for i in range(0, len(losses), every)],
        "loss_curve_every": every,
        "denoising_split": "heldout" if n_hold else "train (aux too small to hold out 10%)",
        "denoising_images": len(eval_images),
        "denoising": denoising_report(unet, scheduler, eval_images, config.seed),
        "samples": 0,
        "samples_png": None,
    }
    if folder is not None:
        from safetensors.torch import save

        state = {k: v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
        atomic_write_bytes(folder / CONFIG, unet.to_json_string().encode())
        atomic_write_bytes(folder / WEIGHTS, save(state, metadata={"cache_key": key}))
        atomic_write_json(folder / REPORT, report)
    return unet.eval(), report


def save_samples(unet, images: ImageDataset, config: DDPMConfig, folder: Path, n: int, report: dict) -> None:
    """Write a grid of n unconditional samples to folder/samples.png and note it in `report`."""
    from ..report.plots import grid_png

    scheduler = make_scheduler(config.num_train_timesteps)
    device = next(unet.parameters()).device
    x = sample(unet, scheduler, n, (images.in_channels, *images.image_size), config.seed, device)
    title = f"DDPM samples, {config.train_steps} steps, final loss {report['final_loss']:.4f}"
    atomic_write_bytes(folder / SAMPLES, grid_png(to_uint8(x), title))
    report.update(samples=n, samples_png=str(folder / SAMPLES))


__all__ = ["CACHE_FORMAT", "DDPMConfig", "EpsilonError", "build_unet", "cache_key", "denoising_report",
           "load_or_train", "make_scheduler", "predict_eps", "sample", "to_model", "to_uint8", "train_ddpm"]
