"""Loss terms shared by protections and attacks (UGE, PUE, distillation), each with a plain
formula in its docstring. The `fit` losses (`DistillationLoss`, `WeightNoiseLoss`) take (logits, x, y).

Shapes: x, x_u are B x C x H x W floats in [0, 1]; y is B int64; features are B x D, L2-normalised.
"""

from __future__ import annotations

import functools

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .errors import LearnlockError


@functools.lru_cache(maxsize=64)
def _segments(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Layer index of every flattened gradient value; built once per model and device (UGE calls
    the distance every batch: no host-to-device copy or size sync each time)."""
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device),
                                   output_size=sum(sizes))


def per_layer_cosine_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean over tensors l of 1 - cos(a_l, b_l) (each tensor flattened); 0 when all align."""
    flat_a = torch.cat([t.reshape(-1) for t in a])
    flat_b = torch.cat([t.reshape(-1) for t in b])
    seg = _segments(tuple(t.numel() for t in a), flat_a.device)
    dots = torch.zeros(len(a), device=flat_a.device, dtype=flat_a.dtype).index_add_(0, seg, flat_a * flat_b)
    na = torch.zeros_like(dots).index_add_(0, seg, flat_a * flat_a)
    nb = torch.zeros_like(dots).index_add_(0, seg, flat_b * flat_b)
    cos = dots / (na.sqrt() * nb.sqrt()).clamp_min(1e-12)
    return (1 - cos).mean()


def select_params(model: nn.Module, layers: str = "all") -> list[str]:
    """Parameter names gradient matching looks at: 'all', 'weights' (no biases / norm affine),
    'first' (the first weight tensor), 'last' (the last weight tensor = classifier)."""
    names = [n for n, p in model.named_parameters()]
    weights = [n for n, p in model.named_parameters() if p.dim() > 1]
    if layers == "all":
        return names
    if layers == "weights":
        return weights
    if layers == "first":
        return weights[:1]
    if layers == "last":
        return weights[-1:]
    raise ValueError(f"layers must be all, weights, first or last, got {layers!r}")


def param_grads(model: nn.Module, state: dict[str, torch.Tensor], names: list[str], x: torch.Tensor,
                y: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, ...]:
    """Gradients of CE(f_state(x), y) w.r.t. the parameters `names`, BatchNorm in train mode
    (batch statistics, as during training) without touching the stored running statistics."""
    dev = x.device  # a stored (CPU) checkpoint follows the batch to its device
    params = {n: state[n].detach().to(dev).requires_grad_(True) for n in names}
    rest = {k: (v.to(dev, copy=True) if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                else v.to(dev)) for k, v in state.items() if k not in params}
    model.train()
    loss = F.cross_entropy(functional_call(model, {**rest, **params}, (x,)), y)
    return torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)


def gradient_matching_loss(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor,
                           x_u: torch.Tensor, y: torch.Tensor, layers: str = "all") -> torch.Tensor:
    """UGE's L_gm at checkpoint `state`: per-layer cosine distance between the parameter gradients
    of CE(f(x), y) and CE(f(x_u), y). Differentiable in x_u (double backward)."""
    names = select_params(model, layers)
    g_clean = param_grads(model, state, names, x, y, create_graph=False)
    g_u = param_grads(model, state, names, x_u, y, create_graph=True)
    return per_layer_cosine_distance(g_u, [g.detach() for g in g_clean])


def unrolled_update_matching_loss(model: nn.Module, state: dict[str, torch.Tensor],
                                  batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                                  lr: float, layers: str = "all") -> torch.Tensor:
    """Multi-step variant of L_gm: run len(batches) plain SGD steps from `state` on the clean
    batches and on the protected ones (x, x_u, y each), and compare the total parameter
    changes layer by layer (1 - cos). Differentiable in every x_u through the unrolled steps."""
    names = select_params(model, layers)
    start = {n: state[n].detach() for n in names}

    def run(use_protected: bool):
        params = dict(start)
        for x, x_u, y in batches:
            cur = {**state, **params}
            grads = param_grads(model, cur, names, x_u if use_protected else x, y,
                                create_graph=use_protected)
            params = {n: params[n] - lr * g for n, g in zip(names, grads)}
        return [params[n] - start[n] for n in names]

    clean = [d.detach() for d in run(False)]
    return per_layer_cosine_distance(run(True), clean)


def feature_distance_loss(f_clean: torch.Tensor, f_u: torch.Tensor, anchors: torch.Tensor,
                          y: torch.Tensor, margin: float, weight_triplet: float = 1.0,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
    """UGE's L_fd on normalised features: l_feat + weight_triplet * l_triplet, with
    l_feat = -mean ||F(x) - F(x_u)||^2 and, with a_far the anchor least similar to F(x),
    l_triplet = mean max(0, ||F(x_u) - a_far||^2 - ||F(x_u) - a_y||^2 + margin).
    `valid` (bool per class) limits a_far to classes that have an anchor: a federated client
    holding only some classes has no class mean for the others."""
    l_feat = -(f_clean - f_u).pow(2).sum(1).mean()
    sim = f_clean @ anchors.T
    if valid is not None:
        sim = sim.masked_fill(~valid, float("inf"))
    far = anchors[sim.argmin(1)]
    true = anchors[y]
    l_tri = F.relu((f_u - far).pow(2).sum(1) - (f_u - true).pow(2).sum(1) + margin).mean()
    return l_feat + weight_triplet * l_tri


def undistill_loss(logits_auth: torch.Tensor, logits_hacker: torch.Tensor, y: torch.Tensor,
                   omega: float) -> torch.Tensor:
    """UGE's L_ud: CE(f(x_u), y) - omega * KL(f(x_u) || h(x_u)), KL(p||q) = sum p (log p - log q)."""
    log_p = F.log_softmax(logits_auth, 1)
    log_q = F.log_softmax(logits_hacker, 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1).mean()
    return F.cross_entropy(logits_auth, y) - omega * kl


class DistillationLoss:
    """KL(teacher || student) at temperature T, times T^2 (Hinton et al. 2015), on the same
    augmented batch the student sees; `alpha` mixes in CE on the labels (0 = pure distillation,
    as in UGE's Eq. 10 "Distill" hacker)."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.0):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha
        self._on = None  # the device the teacher was last moved to

    def __call__(self, logits, x, y):
        t = self.temperature
        if self._on != x.device:  # a teacher loaded on the CPU follows the batch (every parameter and buffer)
            self.teacher.to(x.device)
            self._on = x.device
        with torch.no_grad():
            target = F.softmax(self.teacher(x) / t, dim=1)
        kl = F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean") * t * t
        if self.alpha:
            return (1 - self.alpha) * kl + self.alpha * F.cross_entropy(logits, y)
        return kl


def noisy_params(model: nn.Module, sigma: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """theta + sigma * N(0, I) over every parameter (BatchNorm running statistics are buffers and
    stay as they are), drawn from `gen` on its own device (make it on the model's: no host
    round trip); differentiable in theta."""
    return {name: p + sigma * torch.randn(p.shape, generator=gen, device=gen.device).to(p.device, p.dtype)
            for name, p in model.named_parameters()}


def generator_on(device, seed: int) -> torch.Generator:
    """A seeded generator where the tensors it draws are used (CPU draws stay what they were)."""
    return torch.Generator(device=device).manual_seed(seed)


class WeightNoiseLoss:
    """Cross-entropy averaged over `draws` Gaussian weight perturbations of scale `sigma`: the
    gradient reaches theta through theta + noise, so the network learns to work under parametric
    noise (how PUE trains its surrogates, Wang et al. 2024). The `logits` fit computed with the
    clean weights are not used."""

    def __init__(self, model: nn.Module, sigma: float, draws: int = 1, seed: int = 0):
        if not (sigma >= 0 and draws >= 1):
            raise LearnlockError(f"weight noise needs sigma >= 0 and draws >= 1, got {sigma}, {draws}")
        self.model, self.sigma, self.draws, self.seed = model, sigma, draws, seed
        self.gen = None  # made at the first call, on the device the model trains on

    def __call__(self, logits, x, y):
        self.gen = self.gen or generator_on(x.device, self.seed)
        total = 0.0
        for _ in range(self.draws):
            out = functional_call(self.model, noisy_params(self.model, self.sigma, self.gen), (x,))
            total = total + F.cross_entropy(out, y)
        return total / self.draws
