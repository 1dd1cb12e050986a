"""Ungeneralizable Examples (Ye & Wang, CVPR 2024): data only one authorized network learns from.

x_u = clip(x + delta, x - rho, x + rho) in [0, 1], delta minimising
    L = lambda_gm * L_gm + lambda_fd * L_fd + lambda_ud * L_ud (+ lambda_adv * L_adv)
  - L_gm: per-layer cosine distance between the parameter gradients of CE(f(x), y) and
    CE(f(x_u), y) on checkpoints of the authorized net's clean training run (learnable for it);
  - L_fd: -||F(x) - F(x_u)||^2 plus a triplet term in a pretrained encoder's normalised feature
    space, toward the anchor of the least similar class (unlearnable for others);
  - L_ud: CE(f(x_u), y) - omega * KL(f(x_u) || h(x_u)), f the trained authorized net, h a random
    hacker (undistillable);
  - L_adv (learnlock's addition, off in the paper preset): class-targeted adversarial features
    against an ensemble of surrogates trained on the clean data, CE(s(x_u), y + 1 mod K), a far
    stronger "unlearnable" term than L_fd (Fowl et al. 2021).
With several authorized networks, L_gm and L_ud are averaged over them.

delta comes from a generator G (the paper's amortised engine) or is optimised per sample
(engine="direct"). L_gm can replay the authorized run exactly (same batches, augmentation and
checkpoints as the recipe the authorized user will train with) or, as in the paper, use a
random checkpoint per batch.

    key = NetSpec.create("cnn", 10, 3, seed=1234)
    UGE(ProtectionContext([key], recipe="cpu"), preset="paper").protect(train, "published/")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..diagnostics import diagnose
from ..device import current_device
from ..errors import LearnlockError
from ..losses import feature_distance_loss, gradient_matching_loss, undistill_loss, unrolled_update_matching_loss
from ..models import NetSpec, create_model
from ..recipe import get_recipe
from ..training import apply_augment, batch_schedule
from .base import Protection, ProtectionContext, ProtectionSettings, register_protection
from .generator import Generator
from .resumable import Checkpoint
from .surrogate import model_from, train_cached

ENGINES = ("direct", "generator")
GM_SCHEDULES = ("replay", "random")


@dataclass(frozen=True)
class UGESettings(ProtectionSettings):
    rho: float = 0.04                     # L-inf radius, [0,1] pixel units (paper default)
    engine: str = "generator"             # generator (paper) | direct (per-sample delta)
    epochs: int = 20                      # passes over the data
    lr: float = 0.3                       # direct engine: Adam lr on w, delta = rho * tanh(w)
    generator_lr: float = 1e-3            # generator engine: Adam lr on G's weights
    batch_size: int = 128                 # for the random schedule; replay uses the recipe's batches
    lambda_gm: float = 1.0
    lambda_fd: float = 1.0
    lambda_ud: float = 1.0
    lambda_adv: float = 0.0
    omega: float = 1.0                    # weight of KL(f || h) inside L_ud
    margin: float = 0.5                   # triplet margin alpha (squared distance of unit vectors)
    weight_triplet: float = 1.0
    encoder: str = "efficientnet-lite0"
    encoder_resolution: int = 64          # pixels; dominates the CPU cost of L_fd
    gm_schedule: str = "random"           # random checkpoint per batch (paper) | replay (the authorized
                                          # run's exact batches, augmentation and checkpoints)
    gm_every_steps: int = 0               # 0: one checkpoint per epoch; k: every k optimiser steps
    gm_layers: str = "all"                # all | weights | first | last
    gm_unroll: int = 1                    # >1: match the parameter change over k SGD steps
    surrogates: tuple[str, ...] = ("cnn", "resnet8")   # archs for L_adv, trained on clean data
    surrogate_epochs: int = 10
    ud_hacker: str = ""                   # arch of h in L_ud; "" = the authorized arch, other init
    lambda_proxy: float = 0.0             # learnlock's contrastive term: push the gradients of proxy
    proxies: tuple[str, ...] = ("cnn", "resnet8")      # hackers (other inits, own clean runs) away
                                          # from their clean gradients: -L_gm(proxy)
    diagnostics: bool = True              # log the selectivity and shortcut diagnostics

    def __post_init__(self):
        super().__post_init__()
        self.require(self.engine in ENGINES, f"engine must be one of {ENGINES}, got {self.engine!r}")
        self.require(self.gm_schedule in GM_SCHEDULES, f"gm_schedule must be one of {GM_SCHEDULES}")
        self.require(self.epochs >= 1, "epochs must be >= 1")
        self.require(self.lr > 0 and self.generator_lr > 0, "lr and generator_lr must be > 0")
        self.require(self.gm_unroll >= 1, "gm_unroll must be >= 1")
        self.require(self.encoder_resolution >= 16, "encoder_resolution must be >= 16 pixels")
        self.require(min(self.lambda_gm, self.lambda_fd, self.lambda_ud, self.lambda_adv, self.lambda_proxy) >= 0,
                     "loss weights must be >= 0")
        self.require(self.gm_layers in ("all", "weights", "first", "last"), "gm_layers: all|weights|first|last")


PRESETS: dict[str, dict] = {
    # The paper's recipe as written (= the defaults): generator, the three losses, a random
    # trajectory checkpoint per batch.
    "paper": dict(engine="generator", lambda_gm=1.0, lambda_fd=1.0, lambda_ud=1.0, lambda_adv=0.0,
                  gm_schedule="random"),
    # Table 1 rows of the paper (ablations of the paper recipe).
    "unlearn": dict(engine="generator", lambda_gm=0.0, lambda_fd=1.0, lambda_ud=0.0, lambda_adv=0.0,
                    gm_schedule="random"),
    "undistill": dict(engine="generator", lambda_gm=0.0, lambda_fd=0.0, lambda_ud=1.0, lambda_adv=0.0,
                      gm_schedule="random"),
    "paper-no-ud": dict(engine="generator", lambda_gm=1.0, lambda_fd=1.0, lambda_ud=0.0, lambda_adv=0.0,
                        gm_schedule="random"),
    # Contrastive gradient matching: match the authorized run's gradients, push proxy hackers'
    # gradients away from theirs (directly optimises the selectivity diagnostic).
    "contrast": dict(engine="direct", lambda_gm=1.0, lambda_fd=0.0, lambda_ud=0.0, lambda_adv=0.0,
                     lambda_proxy=1.0, gm_schedule="replay"),
    # learnlock's default: per-sample delta, replayed trajectory, surrogate-ensemble adversarial term.
    "learnlock": dict(engine="direct", lambda_gm=1.0, lambda_fd=1.0, lambda_ud=1.0, lambda_adv=1.0,
                      gm_schedule="replay"),
    "smoke": dict(epochs=1, encoder_resolution=32, surrogates=("lenet",), surrogate_epochs=1, diagnostics=False),
}


@dataclass
class AuthorizedRun:
    """One authorized network: its key, clean-run checkpoints and the trained model."""

    spec: NetSpec
    model: nn.Module
    steps: list[int]
    states: list[dict[str, torch.Tensor]]
    trained: nn.Module
    hacker: nn.Module  # random-init h for L_ud

    def to(self, device: torch.device) -> "AuthorizedRun":
        for m in (self.model, self.trained, self.hacker):
            if m is not None:
                m.to(device)
        self.states = [{k: v.to(device) for k, v in st.items()} for st in self.states]
        return self

    def checkpoint_before(self, step: int) -> dict[str, torch.Tensor]:
        i = max(j for j, s in enumerate(self.steps) if s <= step)
        return self.states[i]


@register_protection("uge")
class UGE(Protection):
    """Ungeneralizable Examples (Ye & Wang, CVPR 2024); see the module docstring.

    context.authorized: one or more NetSpecs (architecture + initial weights: the key);
    context.recipe: how the authorized user will train (its data order is replayed by L_gm)."""

    name = "uge"
    needs_key = True
    presets = PRESETS
    default_preset = "paper"
    Settings = UGESettings

    def __init__(self, context: ProtectionContext | None = None, settings: UGESettings | None = None,
                 preset: str | None = None, **overrides):
        super().__init__(context, settings, preset, **overrides)
        if self.settings.lambda_fd > 0:
            from ..encoders import list_encoders

            if self.settings.encoder not in list_encoders():
                raise LearnlockError(f"unknown encoder {self.settings.encoder!r}; choose one of: "
                                     f"{', '.join(list_encoders())}")
        self.log: list[dict] = []

    def prepare(self, data: ImageDataset, workdir: Path | None):
        s = self.settings
        runs = []
        for i, spec in enumerate(self.authorized):
            steps, states = train_cached(workdir, f"authorized_{i}", spec, data, self.recipe,
                                         s.gm_every_steps, self.progress)
            hacker_arch = s.ud_hacker or spec.arch
            hacker = create_model(hacker_arch, data.num_classes, data.in_channels,
                                  seed=s.seed + 7919 + i, **(spec.kwargs if hacker_arch == spec.arch else {})).eval()
            runs.append(AuthorizedRun(spec, spec.build(), steps, states, model_from(spec, states[-1]), hacker))
        surrogates = []
        if s.lambda_adv > 0:
            for j, arch in enumerate(s.surrogates):
                sspec = NetSpec.create(arch, data.num_classes, data.in_channels, seed=s.seed + 101 + j)
                srecipe = replace(get_recipe("cpu"), epochs=s.surrogate_epochs, seed=s.seed + 101 + j)
                _, sstates = train_cached(workdir, f"surrogate_{j}_{arch}", sspec, data, srecipe,
                                          0, self.progress)
                surrogates.append(model_from(sspec, sstates[-1]))
        proxies = []
        if s.lambda_proxy > 0:  # hacker stand-ins: other inits, their own clean runs
            for j, arch in enumerate(s.proxies):
                pspec = NetSpec.create(arch, data.num_classes, data.in_channels, seed=s.seed + 503 + j)
                precipe = replace(self.recipe, seed=s.seed + 503 + j)
                psteps, pstates = train_cached(workdir, f"proxy_{j}_{arch}", pspec, data, precipe,
                                               0, self.progress)
                proxies.append(AuthorizedRun(pspec, pspec.build(), psteps, pstates, None, None))
        self.proxies = proxies
        encoder = anchors = None
        self.anchor_valid = None  # classes with an anchor (None: all)
        if s.lambda_fd > 0:
            from ..encoders import create_encoder

            encoder = create_encoder(s.encoder, resolution=s.encoder_resolution, device=current_device())
            with torch.no_grad():
                feats = torch.cat([encoder(data.images[i:i + 256].float() / 255)
                                   for i in range(0, len(data), 256)])
            if encoder.has_text:
                anchors = encoder.text_anchors(list(data.classes))
            else:  # documented substitute: normalised class means of the clean features; a class
                # absent from the data (a federated client's shard) gets no anchor
                present = torch.bincount(data.labels, minlength=data.num_classes) > 0
                anchors = torch.stack([feats[data.labels == k].mean(0) if present[k] else feats.new_zeros(feats.shape[1])
                                       for k in range(data.num_classes)])
                anchors = F.normalize(anchors, dim=1)
                self.anchor_valid = present
        else:
            feats = None
        for m in [r.trained for r in runs] + [r.hacker for r in runs] + surrogates + [p.model for p in proxies]:
            for p in m.parameters():
                p.requires_grad_(False)
        return runs, surrogates, encoder, feats, anchors

    # ---- the objective -----------------------------------------------------------------
    def batch_loss(self, x, x_u, y, idx, step, runs, surrogates, encoder, feats, anchors, augment,
                   unroll_batches=None):
        s = self.settings
        terms = {}
        total = x_u.new_zeros(())
        if s.lambda_gm > 0:
            xa = apply_augment(x, augment) if augment is not None else x
            xua = apply_augment(x_u, augment) if augment is not None else x_u
            gm = []
            for r in runs:
                state = r.checkpoint_before(step)
                if s.gm_unroll > 1 and unroll_batches is not None:
                    gm.append(unrolled_update_matching_loss(r.model, state, unroll_batches(r), self.recipe.lr,
                                                            s.gm_layers))
                else:
                    gm.append(gradient_matching_loss(r.model, state, xa, xua, y, s.gm_layers))
            terms["gm"] = torch.stack(gm).mean()
            total = total + s.lambda_gm * terms["gm"]
        if s.lambda_proxy > 0:
            xa = apply_augment(x, augment) if augment is not None else x
            xua = apply_augment(x_u, augment) if augment is not None else x_u
            terms["proxy_gm"] = torch.stack([gradient_matching_loss(p.model, p.checkpoint_before(step), xa, xua, y,
                                                                    s.gm_layers) for p in self.proxies]).mean()
            total = total - s.lambda_proxy * terms["proxy_gm"]
        if s.lambda_fd > 0:
            valid = None if self.anchor_valid is None else self.anchor_valid.to(anchors.device)
            terms["fd"] = feature_distance_loss(feats[idx], encoder(x_u), anchors, y, s.margin, s.weight_triplet,
                                                valid)
            total = total + s.lambda_fd * terms["fd"]
        if s.lambda_ud > 0:
            terms["ud"] = torch.stack([undistill_loss(r.trained(x_u), r.hacker(x_u), y, s.omega)
                                       for r in runs]).mean()
            total = total + s.lambda_ud * terms["ud"]
        if s.lambda_adv > 0:
            adv = []
            for m in surrogates:
                logits = m(x_u)
                adv.append(F.cross_entropy(logits, (y + 1) % logits.shape[1]))  # targeted: class y+1
            terms["adv"] = torch.stack(adv).mean()
            total = total + s.lambda_adv * terms["adv"]
        return total, {k: v.detach() for k, v in terms.items()}  # read once per epoch: no per-batch sync

    def plan(self, n: int, epoch: int, gen: torch.Generator):
        """Batches for optimisation pass `epoch` (0-based): (index, step, augment draw)."""
        s = self.settings
        if s.gm_schedule == "replay" and s.lambda_gm > 0:
            # Spread the passes evenly over the authorized run's epochs, replaying their batches.
            run_epoch = 1 + (epoch * self.recipe.epochs) // s.epochs
            return [(st.index, st.step, st.augment) for st in batch_schedule(n, self.recipe)
                    if st.epoch == run_epoch]
        order = torch.randperm(n, generator=gen)
        total_steps = max(1, self.recipe.epochs * math.ceil(n / self.recipe.batch_size))
        out = []
        for i in range(0, n, s.batch_size):
            idx = order[i:i + s.batch_size]
            if len(idx) >= 2:
                out.append((idx, int(torch.randint(0, total_steps, (1,), generator=gen)), None))
        return out

    # ---- engines -------------------------------------------------------------------------
    def perturb(self, data: ImageDataset, workdir: Path | None = None) -> torch.Tensor:
        s = self.settings
        workdir = Path(workdir) if workdir else None
        if workdir:
            workdir.mkdir(parents=True, exist_ok=True)
        runs, surrogates, encoder, feats, anchors = self.prepare(data, workdir)
        dev = current_device()  # everything follows from here: keys, encoder, generator, surrogates
        for r in runs + self.proxies:
            r.to(dev)
        surrogates = [m.to(dev) for m in surrogates]
        if encoder is not None:
            encoder, feats, anchors = encoder.to(dev), feats.to(dev), anchors.to(dev)
        x_all = data.float_images().to(dev)
        labels = data.labels.to(dev)
        n = len(data)
        if s.engine == "direct":
            w = torch.zeros_like(x_all, requires_grad=True)
            params, state, lr = [w], w, s.lr
        else:
            with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
                torch.random.default_generator.manual_seed(s.seed)
                gen_net = Generator(data.in_channels).to(dev)
            params, state, lr = list(gen_net.parameters()), gen_net, s.generator_lr
        opt = torch.optim.Adam(params, lr=lr)
        # what continues bit for bit: delta (w) or the generator (BatchNorm buffers too), Adam's moments
        parts = {"state/w" if s.engine == "direct" else "state": state, "opt": opt}
        ckpt = Checkpoint(workdir, "engine", {"settings": asdict(s), "recipe": self.recipe.to_dict(), "n": n,
                                              "keys": [a.fingerprint for a in self.authorized], "data": data.fingerprint()},
                          "uge")
        start, self.log = ckpt.restore(parts)

        def delta_of(idx, x):
            if s.engine == "direct":
                return s.rho * torch.tanh(w[idx])
            gen_net.train()
            return s.rho * torch.tanh(gen_net(x))

        bar = tqdm(total=s.epochs, initial=start, desc="uge", disable=not self.progress, leave=False, dynamic_ncols=True)
        for epoch in range(start, s.epochs):
            gen = torch.Generator().manual_seed(s.seed * 100003 + epoch)
            sums: dict[str, float] = {}
            seen: dict[str, list] = {}
            batches = self.plan(n, epoch, gen)
            for idx, step, augment in batches:
                idx = idx.to(dev)
                x, y = x_all[idx], labels[idx]
                x_u = (x + delta_of(idx, x)).clamp(0, 1)
                unroll = self._unroll_batches(x_all, labels, step, delta_of) if s.gm_unroll > 1 else None
                loss, terms = self.batch_loss(x, x_u, y, idx, step, runs, surrogates, encoder, feats,
                                              anchors, augment, unroll)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in terms.items():
                    seen.setdefault(k, []).append(v)
            for k, vs in seen.items():  # one host read per term and epoch, summed as before
                for v in torch.stack(vs).tolist():
                    sums[k] = sums.get(k, 0.0) + v / len(batches)
            entry = {"epoch": epoch + 1, **{k: round(v, 5) for k, v in sums.items()}}
            self.log.append(entry)
            bar.set_postfix({k: f"{v:.3f}" for k, v in sums.items()})
            bar.update(1)
            ckpt.save(epoch + 1, self.log, parts)
        bar.close()
        with torch.no_grad():
            if s.engine == "direct":
                delta = s.rho * torch.tanh(w)
            else:
                gen_net.eval()
                self.generator = gen_net
                delta = torch.cat([s.rho * torch.tanh(gen_net(x_all[i:i + 256])) for i in range(0, n, 256)])
        x_u = (x_all + delta).clamp(0, 1).detach()
        if s.diagnostics:
            self.diagnostics = diagnose(data, x_u, runs, self.recipe, seed=s.seed)
        return x_u.cpu()

    def _unroll_batches(self, x_all, labels, step, delta_of):
        """The next gm_unroll scheduled batches from `step` of the authorized run."""
        plan = [st for st in batch_schedule(len(labels), self.recipe)
                if step <= st.step < step + self.settings.gm_unroll]

        def for_run(run):
            out = []
            for st in plan:
                index = st.index.to(x_all.device)
                x = x_all[index]
                x_u = (x + delta_of(index, x)).clamp(0, 1)
                out.append((apply_augment(x, st.augment), apply_augment(x_u, st.augment), labels[index]))
            return out
        return for_run

    def manifest_extra(self) -> dict:
        return {"diagnostics": getattr(self, "diagnostics", None), "log": self.log}

    def manifest_settings(self) -> dict:
        out = asdict(self.settings)
        out["preset"] = self.preset
        out["authorized_recipe"] = self.recipe.to_dict()
        return out

