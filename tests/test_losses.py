"""Fast loss terms against slow, plain reference implementations."""

import torch
import torch.nn.functional as F

from learnlock.losses import (feature_distance_loss, gradient_matching_loss, per_layer_cosine_distance,
                              undistill_loss, unrolled_update_matching_loss)
from learnlock.models import create_model
from learnlock.callbacks import state_copy


def reference_gm(state, x, x_u, y):
    """Per-layer loop: a fresh copy of the checkpoint per input (so BN statistics start equal),
    ordinary backward, then 1 - cos tensor by tensor."""
    grads = []
    for inp in (x, x_u):
        m = create_model("cnn", 4, 3, seed=0)
        m.load_state_dict(state)
        m.train()
        F.cross_entropy(m(inp), y).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    dists = [1 - (a * b).sum() / (a.norm() * b.norm()) for a, b in zip(*grads)]
    return sum(dists) / len(dists)


def test_gradient_matching_matches_per_layer_loop():
    model = create_model("cnn", 4, 3, seed=0)
    state = state_copy(model)
    x = torch.rand(6, 3, 16, 16)
    x_u = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    fast = gradient_matching_loss(model, state, x, x_u, y)
    slow = reference_gm(state, x, x_u.detach(), y)
    assert torch.allclose(fast, slow, atol=1e-5)
    fast.backward()
    assert x_u.grad is not None and x_u.grad.abs().sum() > 0  # differentiable in x_u
    # Identical inputs match perfectly; the stored BN statistics are untouched.
    assert gradient_matching_loss(model, state, x, x.clone(), y).abs() < 1e-5
    assert all(torch.equal(state[k], v) for k, v in state_copy(model).items())


def test_per_layer_cosine_distance_reference():
    a = [torch.randn(3, 4), torch.randn(5)]
    b = [torch.randn(3, 4), torch.randn(5)]
    ref = sum(1 - F.cosine_similarity(p.flatten(), q.flatten(), dim=0) for p, q in zip(a, b)) / 2
    assert torch.allclose(per_layer_cosine_distance(a, b), ref, atol=1e-6)
    assert per_layer_cosine_distance(a, a) < 1e-6


def test_unrolled_matching_reduces_to_single_step():
    """With one step, the parameter change is -lr * gradient: same cosine as gradient matching."""
    model = create_model("lenet", 4, 3, seed=1)
    state = state_copy(model)
    x = torch.rand(5, 3, 16, 16)
    x_u = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3, 0])
    one = unrolled_update_matching_loss(model, state, [(x, x_u, y)], lr=0.1)
    assert torch.allclose(one, gradient_matching_loss(model, state, x, x_u, y), atol=1e-5)
    two = unrolled_update_matching_loss(model, state, [(x, x_u, y), (x, x_u, y)], lr=0.1)
    assert torch.isfinite(two) and two > 0


def test_feature_distance_explicit_formula():
    torch.manual_seed(0)
    norm = lambda t: t / t.norm(dim=1, keepdim=True)  # noqa: E731
    fc, fu, anchors = norm(torch.randn(4, 8)), norm(torch.randn(4, 8)), norm(torch.randn(3, 8))
    y = torch.tensor([0, 1, 2, 0])
    margin, wt = 0.3, 2.0
    expected = 0.0
    for i in range(4):
        sims = [float(fc[i] @ anchors[k]) for k in range(3)]
        far = anchors[sims.index(min(sims))]
        feat = -float(((fc[i] - fu[i]) ** 2).sum())
        tri = max(0.0, float(((fu[i] - far) ** 2).sum()) - float(((fu[i] - anchors[y[i]]) ** 2).sum()) + margin)
        expected += (feat + wt * tri) / 4
    got = feature_distance_loss(fc, fu, anchors, y, margin, wt)
    assert abs(float(got) - expected) < 1e-5


def test_undistill_explicit_formula():
    torch.manual_seed(0)
    lf, lh = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    p, q = lf.softmax(1), lh.softmax(1)
    kl = sum(float((p[i] * (p[i].log() - q[i].log())).sum()) for i in range(5)) / 5
    ce = sum(-float(p[i, y[i]].log()) for i in range(5)) / 5
    assert abs(float(undistill_loss(lf, lh, y, omega=0.7)) - (ce - 0.7 * kl)) < 1e-5
