"""Every registered attack, and the guarantees each one makes."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import learnable_dataset
from learnlock.attacks import AttackContext, create_attack, get_attack, list_attacks
from learnlock.attacks.adversarial_training import PGDSettings
from learnlock.attacks.augment import MixCallback, AugmentSettings
from learnlock.attacks.iss import grayscale, jpeg, reduce_bits
from learnlock.attacks.recover import SphereProjection, change_norm, project_to_sphere
from learnlock.errors import LearnlockError
from learnlock.models import create_model
from learnlock.training import Recipe, evaluate, fit

TINY = Recipe(name="tiny", epochs=10, batch_size=32, lr=0.05, augment="flip")
# Small settings so every attack runs in seconds; the defaults are what users get.
FAST = {
    "adversarial-training": {"steps": 2, "eps": 4 / 255, "step": 2 / 255},
    "ueraser": {"repeats": 2, "adversarial_fraction": 0.5},
    "recover": {"epochs": 2, "eta": 0.5},
    "recover-random": {"trials": 3, "eta": 0.5},
    # T = 100, t* = 2: the noise level of t* = 20 of the default T = 1000, at a tenth of the cost
    "purify": {"channels": (8, 16), "train_steps": 30, "num_train_timesteps": 100, "t_star": 2, "samples": 0},
    "purify-diffpure": {"channels": (8, 16), "train_steps": 30, "num_train_timesteps": 100, "t_star": 2, "samples": 0},
    "key-estimate": {"family": "spectral"},  # clean data name no key family: the attacker assumes one
}


def make(name):
    cls = get_attack(name)
    valid = {f for f in cls.Settings.__dataclass_fields__}
    return cls(**{k: v for k, v in FAST.get(name, {}).items() if k in valid})


@pytest.fixture(scope="module")
def clean_setup():
    train = learnable_dataset(n_per_class=40)
    test = learnable_dataset(n_per_class=10, seed=1)
    aux = learnable_dataset(n_per_class=10, seed=2)
    teacher = fit(create_model("cnn", 4, 3, seed=0), train, TINY, progress=False)
    return train, test, aux, teacher


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_learns_clean_data(name, clean_setup, tmp_path):
    """On clean, learnable data every attack must still give a working model: an attack that
    breaks learning would 'recover' nothing and hide it."""
    train, test, aux, teacher = clean_setup
    attack = make(name)
    context = AttackContext(teacher=teacher, aux=aux, workdir=tmp_path, progress=False)
    model = attack.train(train, "cnn", 3, TINY, context, progress=False)
    assert not model.training
    assert evaluate(model, attack.transform_test(test)) >= 0.8


@pytest.mark.parametrize("name", [n for n in list_attacks() if get_attack(n).needs])
def test_attacks_name_what_they_miss(name):
    with pytest.raises(LearnlockError, match="needs"):
        make(name).train(learnable_dataset(n_per_class=4), "cnn", 0, TINY, progress=False)


def test_unknown_or_bad_settings_are_refused():
    with pytest.raises(LearnlockError, match="unknown setting"):
        create_attack("iss-jpeg", qualty=10)
    with pytest.raises(LearnlockError, match="quality"):
        create_attack("iss-jpeg", quality=0)
    with pytest.raises(LearnlockError, match="eps"):
        create_attack("adversarial-training", eps=8)
    with pytest.raises(LearnlockError, match="eta"):
        create_attack("recover", eta=-1.0)
    with pytest.raises(LearnlockError, match="unknown attack"):
        get_attack("nope")


# -- ISS against references ------------------------------------------------------------------

def test_grayscale_uses_luminance_weights():
    img = torch.tensor([[[[255]], [[0]], [[0]]], [[[0]], [[255]], [[0]]], [[[10]], [[20]], [[200]]]],
                       dtype=torch.uint8)
    g = grayscale(img)
    assert g.shape == img.shape and (g[:, 0] == g[:, 1]).all() and (g[:, 1] == g[:, 2]).all()
    assert g[:, 0, 0, 0].tolist() == [round(0.299 * 255), round(0.587 * 255), round(0.299 * 10 + 0.587 * 20 + 0.114 * 200)]
    # agrees with PIL's own ITU-R 601 conversion within rounding
    rgb = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    pil = [np.asarray(Image.fromarray(x.permute(1, 2, 0).numpy()).convert("L")) for x in rgb]
    assert np.abs(grayscale(rgb)[:, 0].numpy().astype(int) - np.stack(pil).astype(int)).max() <= 1


def test_jpeg_matches_pil():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = jpeg(x, 10)
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=10)
        ref = np.asarray(Image.open(buf))
        assert np.array_equal(out[i].permute(1, 2, 0).numpy(), ref)
    assert not torch.equal(out, x)  # quality 10 is lossy
    grey = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    assert jpeg(grey, 10).shape == grey.shape


def test_bit_depth_reduction_levels():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    q = reduce_bits(x, 2)
    assert sorted(q.unique().tolist()) == [0, 85, 170, 255]
    flat = q.flatten()
    assert flat[42].item() == 0 and flat[43].item() == 85  # 42.5 is the boundary
    assert torch.equal(reduce_bits(x, 7), reduce_bits(reduce_bits(x, 7), 7))


# -- training-time procedures ------------------------------------------------------------------

def test_pgd_stays_in_the_eps_ball_and_raises_the_loss():
    torch.manual_seed(0)
    data = learnable_dataset(n_per_class=8)
    model = fit(create_model("cnn", 4, 3, seed=0), data, replace(TINY, epochs=3), progress=False)
    x, y = data.float_images(), data.labels
    s = PGDSettings(eps=8 / 255, step=2 / 255, steps=5)
    adv = s.pgd()(model, x, y, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(model(adv), y) > loss(model(x), y)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_mixup_and_cutmix_labels_are_distributions():
    x = torch.rand(8, 3, 16, 16)
    y = torch.arange(8) % 4
    model = create_model("cnn", 4, 3, seed=0)
    for kind in ("mixup", "cutmix"):
        cb = MixCallback(AugmentSettings(kind=kind, alpha=1.0))
        cb.on_fit_start(model, TINY)
        x2, y2 = cb.on_batch(model, x, y, 0)
        assert x2.shape == x.shape and y2.shape == (8, 4)
        assert torch.allclose(y2.sum(1), torch.ones(8))
        assert (y2 >= 0).all()
    cb = MixCallback(AugmentSettings(kind="cutout", size=0.5))
    cb.on_fit_start(model, TINY)
    x3, y3 = cb.on_batch(model, torch.ones(8, 3, 16, 16), y, 0)
    zero = (x3 == 0).float().mean((1, 2, 3))
    assert torch.equal(y3, y) and (zero > 0).all() and (zero <= 0.25 + 1e-6).all()


def test_projection_gives_exactly_norm_eta():
    model = create_model("cnn", 4, 3, seed=0)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    project_to_sphere(model, start, 0.7)
    assert change_norm(model, start) == pytest.approx(0.7, rel=1e-5)
    # and inside training, after every step
    cb = SphereProjection(0.3)
    data = learnable_dataset(n_per_class=8)
    model = create_model("cnn", 4, 3, seed=1)
    start = [p.detach().clone() for p in model.parameters()]
    fit(model, data, replace(TINY, epochs=2), callbacks=[cb], progress=False)
    assert change_norm(model, start) == pytest.approx(0.3, rel=1e-4)


def test_recovery_curve_starts_at_the_unrecovered_model(clean_setup):
    train, test, aux, _ = clean_setup
    attack = create_attack("recover", epochs=1, etas=(0.0, 0.5))
    curve = attack.curve(train, test, "cnn", 0, replace(TINY, epochs=3), AttackContext(aux=aux), progress=False)
    assert [c["eta"] for c in curve] == [0.0, 0.5]
    assert all(0 <= c["accuracy"] <= 1 for c in curve)


def test_same_seed_same_hacker():
    data = learnable_dataset(n_per_class=8)
    for name in ("cutmix", "ueraser", "adversarial-training", "iss-jpeg"):
        a = make(name).train(data, "cnn", 1, replace(TINY, epochs=2), progress=False)
        b = make(name).train(data, "cnn", 1, replace(TINY, epochs=2), progress=False)
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q), name
