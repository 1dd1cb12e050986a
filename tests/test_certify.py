import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import norm

from conftest import learnable_dataset
from learnlock.scenarios.certify import (CertifySettings, certify, certify_accuracies, order_statistic_index, q_bar,
                               sample_accuracies)
from learnlock.cli import main
from learnlock.errors import LearnlockError
from learnlock.losses import noisy_params
from learnlock.models import create_model
from learnlock.recipe import get_recipe
from learnlock.training import fit


def brute_force_k(n: int, qb: float, alpha: float):
    """The same order statistic from the definition, in exact arithmetic: the k-th smallest of n
    draws lies at or above the qb-quantile unless k or more draws fall below it."""
    p = Fraction(qb)
    below = Fraction(0)  # P[Bin(n, p) <= k - 1], accumulated term by term
    for k in range(1, n + 1):
        below += math.comb(n, k - 1) * p ** (k - 1) * (1 - p) ** (n - k + 1)
        if below >= 1 - Fraction(alpha):
            return k
    return None


@pytest.mark.parametrize("n", [1, 7, 30, 200])
@pytest.mark.parametrize("q", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("eta", [0.0, 0.01, 0.1, 0.3])
def test_order_statistic_matches_brute_force(n, q, eta):
    qb = q_bar(q, eta, 0.25)
    assert order_statistic_index(n, qb, 0.01) == brute_force_k(n, qb, 0.01)


def test_hand_computed_cases():
    # eta = 0: q_bar = q; n = 10, q = 0.5, alpha = 0.05: P[Bin(10, .5) <= 7] = 0.9453 < 0.95,
    # P[<= 8] = 0.9893 -> k = 9, the 9th smallest accuracy
    assert q_bar(0.5, 0.0, 0.25) == pytest.approx(0.5)
    assert order_statistic_index(10, 0.5, 0.05) == 9
    rows = certify_accuracies([0.1 * i for i in range(10, 0, -1)], q=0.5, sigma=0.25, etas=[0.0], alpha=0.05)
    assert rows[0]["k"] == 9 and rows[0]["bound"] == pytest.approx(0.9)
    # n = 10, q = 0.9: P[Bin(10, .9) <= 9] = 1 - 0.9^10 = 0.651 < 0.99 -> abstain
    rows = certify_accuracies([0.5] * 10, q=0.9, sigma=0.25, etas=[0.0], alpha=0.01)
    assert rows[0]["abstain"] and rows[0]["bound"] is None
    # q_bar by hand: Phi(Phi^-1(0.9) + 0.25 / 0.25) = Phi(1.2816 + 1) = Phi(2.2816) = 0.98874
    assert q_bar(0.9, 0.25, 0.25) == pytest.approx(norm.cdf(1.2815516 + 1.0), abs=1e-6)
    assert q_bar(0.9, 0.25, 0.25) == pytest.approx(0.98874, abs=1e-5)


def test_bound_grows_with_eta_then_abstains():
    rng = np.random.default_rng(0)
    accs = rng.uniform(0.2, 0.6, 1000)
    rows = certify_accuracies(accs, 0.9, 0.25, [0, 0.05, 0.1, 0.2, 0.4, 1.0, 2.0], 0.01)
    bounds = [r["bound"] for r in rows if not r["abstain"]]
    assert bounds == sorted(bounds) and len(bounds) >= 3
    assert bounds[0] >= np.quantile(accs, 0.9)  # an upper bound of the empirical quantile
    assert rows[-1]["abstain"]  # q_bar ~ 1 - 1e-10: 1000 samples cannot bound it


def test_noisy_params_touch_parameters_only():
    model = create_model("resnet8", 3, 3, seed=0)
    g = torch.Generator().manual_seed(0)
    params = noisy_params(model, 0.25, g)
    assert set(params) == {k for k, _ in model.named_parameters()}
    diffs = torch.cat([(params[k] - p).flatten() for k, p in model.named_parameters()])
    assert diffs.std().item() == pytest.approx(0.25, rel=0.05)
    assert not any("running" in k for k in params)


def test_sample_accuracies_reproducible_and_resumable():
    data = learnable_dataset(n_per_class=5, classes=3, size=8)
    model = create_model("cnn", 3, 3, seed=0)
    a = sample_accuracies(model, data, 0.1, 6, seed=3, progress=False)
    b = sample_accuracies(model, data, 0.1, 6, seed=3, progress=False, done=a[:2])
    assert a == b and len(a) == 6 and all(0 <= v <= 1 for v in a)
    assert sample_accuracies(model, data, 1e-9, 2, progress=False) == [pytest.approx(
        (model.eval()(data.float_images()).argmax(1) == data.labels).float().mean().item())] * 2


def test_settings_validated():
    for bad in (dict(q=1.0), dict(sigma=0), dict(n=0), dict(alpha=1.5), dict(etas=(-1.0,)), dict(etas=())):
        with pytest.raises(LearnlockError, match="certify"):
            CertifySettings(**bad)


def test_certify_writes_and_resumes(tmp_path):
    train = learnable_dataset(n_per_class=10, classes=3, size=8, seed=1)
    test = learnable_dataset(n_per_class=10, classes=3, size=8, seed=2)
    model = fit(create_model("cnn", 3, 3, seed=0), train, get_recipe("cpu", epochs=3, batch_size=16), progress=False)
    s = CertifySettings(n=30, sigma=0.05, etas=(0.0, 0.01, 0.05))
    cert = certify(model, test, s, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "certify.json").read_text())
    assert saved["accuracies"] == cert.accuracies and len(saved["rows"]) == 3
    assert (tmp_path / "certify.png").stat().st_size > 1000 and "certified" in (tmp_path / "certify.md").read_text()
    again = certify(model, test, CertifySettings(n=40, sigma=0.05, etas=(0.0,)), out_dir=tmp_path, progress=False)
    assert again.accuracies[:30] == cert.accuracies  # resumed: the first 30 samples were reused


def test_cli_certify(tmp_path, capsys, monkeypatch):
    from learnlock.protections import create_protection

    data = learnable_dataset(n_per_class=8, classes=3, size=8)
    test = learnable_dataset(n_per_class=5, classes=3, size=8, seed=5)
    np.savez(tmp_path / "test.npz", x=test.images.permute(0, 2, 3, 1).numpy(), y=test.labels.numpy(),
             classes=np.array(test.classes))
    create_protection("random", seed=0).protect(data, tmp_path / "pub")
    argv = ["certify", str(tmp_path / "pub"), "--test", f"npz:{tmp_path / 'test.npz'}", "--arch", "cnn",
            "--n", "12", "--sigma", "0.05", "--etas", "0,0.01", "--epochs", "2", "--batch-size", "8",
            "--out", str(tmp_path / "cert"), "--no-progress"]
    rc = main(argv)
    assert rc == 0
    assert "certified learnability" in capsys.readouterr().out
    assert (tmp_path / "cert" / "surrogate.safetensors").exists()
    # the surrogate is a cell of the cell cache (OUT/cells): the same command again trains nothing
    import importlib

    certify_module = importlib.import_module("learnlock.scenarios.certify")  # the package exports a function of that name

    first = (tmp_path / "cert" / "surrogate.safetensors").read_bytes()
    (tmp_path / "cert" / "surrogate.safetensors").unlink()  # an output, not the cache
    monkeypatch.setattr(certify_module, "fit", lambda *a, **k: pytest.fail("the surrogate was trained again"))
    assert main(argv) == 0
    assert (tmp_path / "cert" / "surrogate.safetensors").read_bytes() == first
    assert len(list((tmp_path / "cert" / "cells" / "surrogate").glob("*.safetensors"))) == 1
    monkeypatch.undo()
    capsys.readouterr()
    rc = main(["certify", str(tmp_path / "pub"), "--test", f"npz:{tmp_path / 'test.npz'}",
               "--weights", str(tmp_path / "cert" / "surrogate.safetensors"), "--n", "0", "--out", str(tmp_path / "c2")])
    assert rc == 2
    assert "n is a number of weight samples" in capsys.readouterr().err
