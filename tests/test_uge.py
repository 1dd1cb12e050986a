"""UGE end to end on tiny data: bounds, determinism, publishing, resume, bad inputs."""

import math

import pytest
import torch

from conftest import learnable_dataset, write_npz
from learnlock import NetSpec, load_dataset
from learnlock.errors import LearnlockError
from learnlock.protections import ProtectionContext, get_protection
from learnlock.protections.resumable import Checkpoint
from learnlock.protections.uge import PRESETS, UGE
from learnlock.recipe import Recipe

RECIPE = Recipe(name="tiny", epochs=2, batch_size=16, lr=0.05)
# The smoke preset's sizes (it holds no loss weights, so it goes with any preset), over two epochs: the
# log holds one entry per epoch.
FAST = {**PRESETS["smoke"], "epochs": 2}


def ctx(keys):
    return ProtectionContext(keys, RECIPE, progress=False)


@pytest.fixture(scope="module")
def data():
    return learnable_dataset(n_per_class=8, classes=4, size=16)


@pytest.fixture(scope="module")
def key():
    return NetSpec.create("cnn", 4, 3, seed=11, width=8)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_stays_in_the_ball(data, key, preset):
    prot = UGE(ctx(key), preset=preset, rho=6 / 255, **FAST)
    out = prot.apply(data)
    assert out.dtype == torch.uint8 and out.shape == data.images.shape
    delta = out.int() - data.images.int()
    assert delta.abs().max() <= 6 and delta.abs().max() >= 1  # in the ball, and not a no-op
    assert len(prot.log) == 2 and all(torch.isfinite(torch.tensor(list(e.values()))).all() for e in prot.log)


def test_same_seed_same_bytes_and_seed_matters(data, key):
    a = UGE(ctx(key), preset="learnlock", seed=3, **FAST).apply(data)
    b = UGE(ctx(key), preset="learnlock", seed=3, **FAST).apply(data)
    c = UGE(ctx(key), preset="learnlock", seed=4, **FAST).apply(data)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_published_roundtrip_and_manifest(data, key, tmp_path):
    prot = UGE(ctx(key), preset="paper", rho=0.04, **FAST)
    out = prot.protect(data, tmp_path / "pub")
    pub = load_dataset(f"published:{out}")
    assert pub.ids == data.ids and torch.equal(pub.labels, data.labels)
    assert ((pub.images.float() - data.images.float()).abs() / 255).max() <= 0.04
    import json
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"] == "uge" and m["settings"]["preset"] == "paper"
    assert m["authorized"]["networks"][0]["fingerprint"] == key.fingerprint
    assert m["authorized"]["recipe"]["epochs"] == 2 and "weights" not in json.dumps(m["authorized"])
    assert len(m["extra"]["log"]) == 2
    png = next((out / "images").rglob("*.png"))
    png.write_bytes(png.read_bytes()[:-1] + bytes([png.read_bytes()[-1] ^ 1]))
    with pytest.raises(LearnlockError, match="sha256"):
        load_dataset(f"published:{out}")


@pytest.mark.parametrize("engine", ["generator", "direct"])
def test_resume_equals_uninterrupted(data, key, tmp_path, monkeypatch, engine):
    """A run killed after two of three epochs and resumed publishes the same images and the same
    manifest (the optimisation log of all three epochs and the diagnostics included)."""
    import json

    settings = dict(FAST, epochs=3, engine=engine, diagnostics=True)
    full = UGE(ctx(key), preset="paper", **settings).protect(data, tmp_path / "a", workdir=tmp_path / "wa")

    calls = {"n": 0}
    real = Checkpoint.save

    def crash_after_two(self, *a, **k):
        real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        UGE(ctx(key), preset="paper", **settings).protect(data, tmp_path / "b", workdir=tmp_path / "wb")
    monkeypatch.setattr(Checkpoint, "save", real)
    passes = []
    real_plan = UGE.plan
    monkeypatch.setattr(UGE, "plan", lambda self, n, epoch, gen: passes.append(epoch) or real_plan(self, n, epoch, gen))
    resumed = UGE(ctx(key), preset="paper", **settings).protect(data, tmp_path / "b", workdir=tmp_path / "wb")
    assert passes == [2]  # only the missing pass ran
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert [e["epoch"] for e in manifest["extra"]["log"]] == [1, 2, 3]
    assert manifest == json.loads((full / "manifest.json").read_text())
    assert torch.equal(load_dataset(f"published:{resumed}").images, load_dataset(f"published:{full}").images)
    # A changed setting must not silently reuse the interrupted state.
    with pytest.raises(LearnlockError, match="other settings or data"):
        UGE(ctx(key), preset="paper", **dict(settings, lambda_gm=2.0)).perturb(data, tmp_path / "wb")


def test_bad_inputs(data, key, tmp_path):
    with pytest.raises(LearnlockError, match="did you mean 10/255"):
        UGE(ctx(key), rho=10)
    with pytest.raises(LearnlockError, match="unknown encoder 'clip-xl'"):
        UGE(ctx(key), encoder="clip-xl")
    with pytest.raises(LearnlockError, match="unknown uge preset"):
        UGE(ctx(key), preset="strong")
    grey_key = NetSpec.create("cnn", 4, 1, seed=0, width=8)
    with pytest.raises(LearnlockError, match="takes 1-channel images"):
        UGE(ctx(grey_key), **FAST).apply(data)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LearnlockError, match="cannot write|not a folder|exists"):
        UGE(ctx(key), **FAST).protect(data, blocker / "out")
    assert get_protection("uge") is UGE


def test_adversarial_term_alone(data, key):
    """L_adv without the encoder (no anchors): targets come from the surrogates' class count."""
    prot = UGE(ctx(key), preset="paper", engine="direct", lambda_gm=0.0, lambda_fd=0.0, lambda_ud=0.0,
               lambda_adv=1.0, **FAST)
    out = prot.apply(data)
    assert (out.int() - data.images.int()).abs().max() <= 10 and "adv" in prot.log[-1]
    assert prot.log[-1]["adv"] < prot.log[0]["adv"] + 1e-6  # the targeted loss goes down


def test_several_authorized_networks_average_their_losses(data):
    """With K authorized networks (same arch other init, and another arch), L_gm and L_ud and
    their gradients are the means of the K single-network values; L_fd is shared, not averaged."""
    keys = [NetSpec.create("cnn", 4, 3, seed=11, width=8), NetSpec.create("cnn", 4, 3, seed=12, width=8),
            NetSpec.create("lenet", 4, 3, seed=13)]
    prot = UGE(ctx(keys), preset="paper", **FAST)
    runs, surrogates, encoder, feats, anchors = prot.prepare(data, None)
    assert len(runs) == 3 and runs[0].states[-1].keys() != runs[2].states[-1].keys()
    idx = torch.arange(12)
    x = data.float_images()[idx]
    y = data.labels[idx]
    delta = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.08

    def loss_and_grad(which):
        d = delta.clone().requires_grad_(True)
        total, terms = prot.batch_loss(x, (x + d).clamp(0, 1), y, idx, 3, which, surrogates, encoder, feats,
                                       anchors, None)
        total.backward()
        return total.item(), {k: float(v) for k, v in terms.items()}, d.grad  # terms stay tensors until read

    total, terms, grad = loss_and_grad(runs)
    singles = [loss_and_grad([r]) for r in runs]
    for name in ("gm", "ud"):
        each = [t[name] for _, t, _ in singles]
        assert len(set(each)) == 3  # the networks really differ
        assert terms[name] == pytest.approx(sum(each) / 3, rel=1e-5, abs=1e-6)
    assert all(t["fd"] == pytest.approx(terms["fd"], rel=1e-6) for _, t, _ in singles)
    assert total == pytest.approx(sum(t for t, _, _ in singles) / 3, rel=1e-5, abs=1e-6)
    assert torch.allclose(grad, sum(g for _, _, g in singles) / 3, rtol=1e-4, atol=1e-7)


def test_anchors_only_for_classes_present(data):
    """A shard holding only some classes (a federated client): no NaN from absent class means."""
    shard = data.subset(torch.nonzero(data.labels < 2).flatten())
    prot = UGE(ctx(NetSpec.create("cnn", 4, 3, seed=11, width=8)), preset="paper", **FAST)
    out = prot.apply(shard)
    assert prot.anchor_valid.tolist() == [True, True, False, False]
    assert all(math.isfinite(v) for e in prot.log for v in e.values())
    assert (out.int() - shard.images.int()).abs().max() >= 1


def test_cli_several_authorized_by_arch_and_seed(tmp_path, capsys):
    from learnlock import cli

    write_npz(tmp_path / "d.npz")
    args = ["protect", "--method", "uge", "--data", f"npz:{tmp_path / 'd.npz'}", "--set", "epochs=1",
            "--set", "encoder_resolution=32", "--set", "diagnostics=false", "--authorized-epochs", "1", "--no-progress"]
    assert cli.main([*args, "--authorized-arch", "cnn,lenet", "--authorized-seeds", "0,1",
                     "--out", str(tmp_path / "pub")]) == 0, capsys.readouterr().err
    import json
    nets = json.loads((tmp_path / "pub" / "manifest.json").read_text())["authorized"]["networks"]
    keys = [NetSpec.load(tmp_path / f"pub.key{i}.safetensors") for i in range(2)]
    assert [n["arch"] for n in nets] == ["cnn", "lenet"]
    assert [n["fingerprint"] for n in nets] == [k.fingerprint for k in keys]
    assert keys[0].fingerprint == NetSpec.create("cnn", 4, 3, seed=0).fingerprint
    # One arch, several seeds; mismatched counts and duplicates are refused with a clear error.
    for bad, msg in ((["--authorized-arch", "cnn,lenet,cnn", "--authorized-seeds", "0,1"], "one seed per network"),
                     (["--authorized-arch", "cnn", "--authorized-seeds", "3,3"], "given twice"),
                     (["--authorized-arch", "cnn"], "needs --authorized-seeds"),
                     (["--authorized", "cnn", "--key-seed", "1", "--authorized-arch", "cnn",
                       "--authorized-seeds", "2"], "not both")):
        assert cli.main([*args, *bad, "--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err


def test_linear_probe_is_seeded():
    """The probe's initial weights come from its seed, not the global RNG: two identical runs give
    the same delta_linear_probe_acc in the manifest."""
    from learnlock.diagnostics import linear_probe

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 30, generator=g), torch.randint(0, 4, (40,), generator=g)
    def probe(seed):
        return linear_probe(x[:20], y[:20], x[20:], y[20:], 4, steps=1, seed=seed)

    assert len({probe(s) for s in range(4)}) > 1  # one LBFGS step: the result depends on the init
    accs = []
    for draw in range(3):
        torch.rand(draw + 1)  # the global RNG moves between calls
        accs.append(probe(1))
    assert accs[0] == accs[1] == accs[2]
    state = torch.random.get_rng_state()
    probe(2)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left as it was
