"""Method-specific properties of the unlearnable-example baselines (the generic guarantees are in
test_protections.py, which loops over every registered protection)."""

import math

import torch
import torch.nn.functional as F

from conftest import learnable_dataset
from learnlock.models import create_model
from learnlock.protections import create_protection, project_l2_quantize
from learnlock.protections.ops import search_pixel
from learnlock.losses import WeightNoiseLoss
from learnlock.recipe import get_recipe
from learnlock.training import cross_entropy, fit


def small(name, **kw):
    p = create_protection(name, **kw)
    p.progress = False
    return p


def test_em_min_min_converges_and_minimises_error():
    data = learnable_dataset(n_per_class=8, classes=3, size=8)
    prot = small("em", surrogate="cnn", classwise=True, max_rounds=8, train_steps=5, batch_size=8,
                 stop_error=0.0, rho=16 / 255)
    x_q = prot.apply(data)
    accs = [r["accuracy"] for r in prot.log]
    assert accs[-1] >= 0.95, accs  # the surrogate fits x + delta: the noise is error-minimizing
    delta = x_q.float() / 255 - data.float_images()
    assert delta.abs().max() <= 16 / 255 + 1e-6


def test_em_resume_is_exact(tmp_path):
    data = learnable_dataset(n_per_class=4, classes=3, size=8)
    kw = dict(surrogate="cnn", noise_steps=2, train_steps=2, batch_size=8, stop_error=0.0)
    full = small("em", max_rounds=3, **kw).apply(data)
    small("em", max_rounds=2, **kw).apply(data, workdir=tmp_path)
    resumed = small("em", max_rounds=3, **kw)
    out = resumed.apply(data, workdir=tmp_path)
    assert [r["round"] for r in resumed.log] == [1, 2, 3]
    assert torch.equal(out, full)


def test_em_refuses_foreign_state(tmp_path):
    import pytest
    from learnlock.errors import LearnlockError

    data = learnable_dataset(n_per_class=4, classes=3, size=8)
    kw = dict(surrogate="cnn", noise_steps=1, train_steps=1, batch_size=8, max_rounds=1)
    small("em", **kw).apply(data, workdir=tmp_path)
    with pytest.raises(LearnlockError, match="other settings or data"):
        small("em", rho=4 / 255, **kw).apply(data, workdir=tmp_path)


def test_tap_hits_its_target_class():
    data = learnable_dataset(n_per_class=10, classes=3, size=8)
    prot = small("tap", surrogate="cnn", recipe="cpu", steps=30, step_size=4 / 255, rho=32 / 255)
    x_q = prot.apply(data)
    # the surrogate it attacked: same seed, same recipe, same data
    model = fit(create_model("cnn", 3, 3, seed=0), data, get_recipe("cpu", seed=0), progress=False).eval()
    with torch.no_grad():
        clean = model(data.float_images()).argmax(1)
        adv = model(x_q.float() / 255).argmax(1)
    target = (data.labels + 1) % 3
    assert (adv == target).float().mean() > (clean == target).float().mean() + 0.3


def test_lsp_noise_is_linearly_separable_and_blocky():
    data = learnable_dataset(n_per_class=10, classes=4, size=16)
    prot = small("lsp", patch=4)
    delta = prot.perturb(data) - data.float_images()
    norms = delta.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, prot.l2_radius((3, 16, 16))), rtol=1e-4)
    blocks = delta.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.allclose(blocks.amax((-1, -2)), blocks.amin((-1, -2)), atol=1e-5)
    # nearest class mean of the noise alone classifies every item: a linear shortcut
    flat = delta.flatten(1)
    means = torch.stack([flat[data.labels == k].mean(0) for k in range(4)])
    assert (torch.cdist(flat, means).argmin(1) == data.labels).all()


def test_ops_finds_the_planted_pixel():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((12, 3, 6, 6), generator=g)
    x[:, :, 2, 4] = 0.02  # a consistently dark pixel: white there is a large, constant change
    i, j, colour = search_pixel(x)
    assert (i, j) == (2, 4) and colour.tolist() == [1.0, 1.0, 1.0]


def test_l2_projection_property():
    g = torch.Generator().manual_seed(0)
    for radius in (0.01, 0.3, 2.0):
        x = torch.randint(0, 256, (32, 3, 5, 5), generator=g, dtype=torch.uint8)
        x_u = x.float() / 255 + torch.randn(x.shape, generator=g) * radius * torch.rand((32, 1, 1, 1), generator=g)
        x_q = project_l2_quantize(x, x_u, radius)
        d = (x_q.double() - x.double()) / 255
        assert d.flatten(1).norm(dim=1).max() <= radius + 1e-12
        small_ = (x_u - x.float() / 255).flatten(1).norm(dim=1) < 0.5 * radius
        assert torch.equal(x_q[small_ & ((x_u >= 0) & (x_u <= 1)).flatten(1).all(1)].long(),
                           torch.trunc(x_u * 255 - x.float()).add(x.float()).round()[
                               small_ & ((x_u >= 0) & (x_u <= 1)).flatten(1).all(1)].long())


def test_weight_noise_loss():
    model = create_model("cnn", 3, 3, seed=0).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    logits = model(x)
    assert torch.allclose(WeightNoiseLoss(model, 0.0, 3)(logits, x, y), cross_entropy(logits, x, y), atol=1e-6)
    noisy = WeightNoiseLoss(model, 0.5, 4, seed=1)(logits, x, y)
    noisy.backward()
    assert all(p.grad is not None for p in model.parameters())  # gradients reach theta
    assert not math.isclose(noisy.item(), F.cross_entropy(logits, y).item(), rel_tol=1e-3)


def test_pue_switches_on_weight_noise():
    data = learnable_dataset(n_per_class=6, classes=3, size=8)
    prot = small("pue", surrogate="cnn", max_rounds=3, train_steps=3, batch_size=8, draws=2, train_draws=2,
                 warmup_accuracy=0.0, stop_error=0.0)
    prot.apply(data)
    assert prot.noisy_rounds == 3 and prot.manifest_extra()["noisy_rounds"] == 3
    late = small("pue", surrogate="cnn", max_rounds=2, train_steps=1, batch_size=8, draws=2, train_draws=2,
                 warmup_accuracy=1.0, stop_error=0.0)
    late.apply(data)
    assert late.noisy_rounds <= 1  # switched on only once plain min-min reached the warm-up accuracy


def test_cli_protect_em_and_bad_settings(tmp_path, capsys):
    from conftest import write_folder
    from learnlock.cli import main
    from learnlock.data.published import read_manifest

    write_folder(tmp_path / "src", per_class=4, size=(8, 8))
    out = tmp_path / "pub"
    rc = main(["protect", "--method", "em", "--data", f"folder:{tmp_path / 'src'}", "--out", str(out),
               "--set", "surrogate=cnn", "--set", "classwise=true", "--set", "max_rounds=2",
               "--set", "batch_size=4", "--set", "train_steps=1", "--no-progress"])
    assert rc == 0
    m = read_manifest(out)
    assert m["method"] == "em" and m["settings"]["classwise"] is True and m["settings"]["noise_steps"] == 1
    assert m["extra"]["norm"] == {"norm": "linf", "radius": 8 / 255, "units": "[0,1] pixels"}
    assert m["extra"]["rounds"] == 2 and len(m["extra"]["log"]) == 2
    assert not (tmp_path / ".pub.work").exists()  # the resumable state is removed once published
    capsys.readouterr()
    rc = main(["protect", "--method", "em", "--data", f"folder:{tmp_path / 'src'}", "--out", str(tmp_path / "p2"),
               "--set", "surrogate=nonet"])
    assert rc == 2 and "unknown surrogate 'nonet'" in capsys.readouterr().err
    rc = main(["protect", "--method", "pue", "--data", f"folder:{tmp_path / 'src'}", "--out", str(tmp_path / "p3"),
               "--rho", "8"])
    assert rc == 2 and "8/255" in capsys.readouterr().err
