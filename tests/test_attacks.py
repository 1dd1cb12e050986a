"""Every registered attack, and the guarantees each one makes."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ASSUMED, learnable_dataset, make_attack as make
from learnlock.attacks import AttackContext, create_attack, get_attack, list_attacks
from learnlock.attacks.adversarial_training import PGDSettings
from learnlock.attacks.augment import MixCallback, AugmentSettings
from learnlock.attacks.iss import grayscale, jpeg, reduce_bits
from learnlock.attacks.recover import SphereProjection, change_norm, project_to_sphere
from learnlock.errors import LearnlockError
from learnlock.models import create_model
from learnlock.recipe import Recipe
from learnlock.training import evaluate, fit, predict

# The hacker's recipe: enough epochs for every attack to learn the clean, learnable data.
HACKER = Recipe(name="hacker", epochs=10, batch_size=32, lr=0.05, augment="flip")


@pytest.fixture(scope="module")
def clean_setup():
    train = learnable_dataset(n_per_class=40)
    test = learnable_dataset(n_per_class=10, seed=1)
    aux = learnable_dataset(n_per_class=10, seed=2)
    teacher = fit(create_model("cnn", 4, 3, seed=0), train, HACKER, progress=False)
    return train, test, aux, teacher


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_learns_clean_data(name, clean_setup, tmp_path):
    """On clean, learnable data every attack must still give a working model: an attack that
    breaks learning would 'recover' nothing and hide it."""
    train, test, aux, teacher = clean_setup
    attack = make(name, **ASSUMED.get(name, {}))
    # leaked originals: the published images are the originals brightened by 8 grey levels
    originals = train.with_images((train.images.int() - 8).clamp(0, 255)
                                  .to(torch.uint8))
    context = AttackContext(teacher=teacher, aux=aux, workdir=tmp_path, progress=False, rho=4 / 255,
                            originals=originals)
    model = attack.train(train, "cnn", 3, HACKER, context, progress=False)
    assert not model.training
    assert evaluate(model, attack.transform_test(test)) >= 0.8


@pytest.mark.parametrize("name", [n for n in list_attacks() if get_attack(n).needs])
def test_attacks_name_what_they_miss(name):
    with pytest.raises(LearnlockError, match="needs"):
        make(name).train(learnable_dataset(n_per_class=4), "cnn", 0, HACKER, progress=False)


def test_every_attack_declares_a_smoke_preset():
    """Its own (not inherited) tiny settings, which every test here and bench/gpu_smoke.py run: a
    new attack cannot be registered without them."""
    for name in list_attacks():
        cls = get_attack(name)
        assert "smoke" in vars(cls).get("presets", {}), f"{name} declares no smoke preset"
        settings = make(name).settings  # built: every key is a setting, every value passes its checks
        assert all(getattr(settings, k) == v for k, v in cls.presets["smoke"].items()), name


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
    model = fit(create_model("cnn", 4, 3, seed=0), data, replace(HACKER, epochs=3), progress=False)
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
        cb.on_fit_start(model, HACKER)
        x2, y2 = cb.on_batch(model, x, y, 0)
        assert x2.shape == x.shape and y2.shape == (8, 4)
        assert torch.allclose(y2.sum(1), torch.ones(8))
        assert (y2 >= 0).all()
    cb = MixCallback(AugmentSettings(kind="cutout", size=0.5))
    cb.on_fit_start(model, HACKER)
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
    fit(model, data, replace(HACKER, epochs=2), callbacks=[cb], progress=False)
    assert change_norm(model, start) == pytest.approx(0.3, rel=1e-4)


def test_recovery_curve_starts_at_the_unrecovered_model(clean_setup):
    train, test, aux, _ = clean_setup
    attack = create_attack("recover", epochs=1, etas=(0.0, 0.5))
    curve = attack.curve(train, test, "cnn", 0, replace(HACKER, epochs=3), AttackContext(aux=aux), progress=False)
    assert [c["eta"] for c in curve] == [0.0, 0.5]
    assert all(0 <= c["accuracy"] <= 1 for c in curve)


def test_ueraser_never_hands_back_plain_images():
    """UEraser augments every batch to the last epoch: K max-loss draws in the adversarial share of
    the epochs, one strong draw after it (the reference's UEraser-Lite), never the plain batch, on
    which a network would learn the intact shortcut in the last epochs; draws are seeded."""
    from learnlock.attacks.ueraser import MaxLossAugment, UEraserSettings
    from learnlock.models import create_model

    model = create_model("cnn", 10, 3, seed=0)
    x, y = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    cb = MaxLossAugment(UEraserSettings())
    cb.on_fit_start(model, replace(HACKER, epochs=8))
    assert cb.adversarial_epochs == 2                        # 0.25 of the epochs, as the reference (50 of 200)
    outs = []
    for epoch in range(1, 9):
        out, labels = cb.on_batch(model, x, y, step=epoch)
        assert out.shape == x.shape and torch.equal(labels, y)
        assert (out - x).abs().mean() > 0.01, f"epoch {epoch}: the plain batch"
        outs.append(out)
        cb.on_epoch_end(model, epoch)
    again = MaxLossAugment(UEraserSettings())
    again.on_fit_start(model, replace(HACKER, epochs=8))
    again.epoch = 8
    assert torch.equal(again.on_batch(model, x, y, step=8)[0], outs[-1])


def test_same_seed_same_hacker():
    data = learnable_dataset(n_per_class=8)
    for name in ("cutmix", "ueraser", "adversarial-training", "iss-jpeg"):
        a = make(name).train(data, "cnn", 1, replace(HACKER, epochs=2), progress=False)
        b = make(name).train(data, "cnn", 1, replace(HACKER, epochs=2), progress=False)
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q), name


# ---------------------------------------------------------------- attacks that know the scheme (issue 23)

def shortcut_dataset(direction=None, n_per_class=40, classes=4, size=16, amplitude=40, seed=0):
    """Noise images (no signal but the shortcut) plus a class-wise +-`amplitude`-level pattern:
    along the unit colour `direction` at every pixel (a planted colour key), or, with None, a
    class-wise pattern over all pixels and channels (a planted linear shortcut). Returns the
    dataset and the class patterns (classes x C x H x W, in levels)."""
    from learnlock.data import ImageDataset

    g = torch.Generator().manual_seed(seed)
    n = n_per_class * classes
    x = torch.randint(60, 196, (n, 3, size, size), generator=g).float()
    y = torch.arange(classes).repeat_interleave(n_per_class)
    if direction is not None:
        signs = torch.randint(0, 2, (classes, 1, size // 4, size // 4), generator=g).float() * 2 - 1
        signs = signs.repeat_interleave(4, 2).repeat_interleave(4, 3)   # 4x4 blocks: easy to learn
        patterns = amplitude * signs * direction.float().view(1, 3, 1, 1)
    else:
        patterns = amplitude * (torch.randint(0, 2, (classes, 3, size, size), generator=g).float() * 2 - 1)
    images = (x + patterns[y]).round().clamp(0, 255).to(torch.uint8)
    return ImageDataset(images, y, tuple(f"c{i}" for i in range(classes)), tuple(str(i) for i in range(n)),
                        source="shortcut"), patterns


def colour_teacher(direction):
    """A KeyedNet whose key layer removes `direction` (only its key is read: the agreement)."""
    from learnlock.keys.layers import create_key_layer
    from learnlock.keys.keyed import KeyedNet

    layer = create_key_layer("colour", 3, 16, seed=0, dims=1)
    layer.basis.copy_(direction.float()[:, None])
    return KeyedNet(layer, create_model("cnn", 4, 3, seed=0))


@pytest.mark.parametrize("luma", [0.9, None])
def test_key_search_finds_a_planted_colour_key(luma):
    """On data whose only learnable signal is a class-wise shortcut along a secret colour c, the
    candidate under which the data are learned slowest is c: |cos| > 0.9 on the sphere (a random
    guess averages 0.5), and on the cone (where any azimuth has |cos| >= 2 luma - 1 = 0.8) the
    grid point nearest c."""
    from learnlock.keys.layers import luma_basis

    torch.manual_seed(5)
    c = luma_basis(0.9, 1)[:, 0].double() if luma else torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0)
    data, _ = shortcut_dataset(c)
    scheme = {"family": "colour", "settings": {"dims": 1, **({"luma": luma} if luma else {})}}
    attack = create_attack("key-search", candidates=12 if luma else 24, search_epochs=8, refine=2)
    # the search trains with the recipe `train` is given, at batch 32, 8 epochs per candidate
    attack.train(data, "cnn", 0, HACKER, AttackContext(scheme=scheme, teacher=colour_teacher(c), progress=False),
                 progress=False)
    rep = attack.report()
    assert rep["grid"] == ("cone" if luma else "half sphere")
    assert rep["abs_cos_with_true_key"] > 0.9
    accs = rep["train_accuracy"]
    assert min(accs) < sorted(accs)[len(accs) // 2] - 0.1
    # two rounds of local search: 2 (cone) or 4 (sphere) neighbours each; the choice is the centre of
    # the candidates tied at the lowest training accuracy, never further out than the grid's best
    assert rep["trainings"] == (12 + 2 * 2 if luma else 24 + 2 * 4) == len(accs)
    assert rep["abs_cos_best_grid_candidate"] >= rep["abs_cos_grid_choice"]
    if luma:  # the grid's neighbours of the nearest point are 30 degrees of azimuth away: |cos| 0.987
        assert rep["abs_cos_with_true_key"] > 0.99


def mosaic_shortcut(layer, classes=4, n_per_class=40, amplitude=40):
    """Noise images plus a class-wise +-amplitude pattern of 4x4 blocks along each tile's colour of
    a planted mosaic key (the only learnable signal)."""
    from learnlock.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    n, size, t = classes * n_per_class, layer.image_size, layer.tile
    x = torch.randint(60, 196, (n, 3, size, size), generator=g).float()
    y = torch.arange(classes).repeat_interleave(n_per_class)
    signs = torch.randint(0, 2, (classes, 1, size // 4, size // 4), generator=g).float() * 2 - 1
    signs = signs.repeat_interleave(4, 2).repeat_interleave(4, 3)
    b = layer.basis_map[..., 0].repeat_interleave(t, 0).repeat_interleave(t, 1).permute(2, 0, 1)
    images = (x + amplitude * signs[y] * b[None]).round().clamp(0, 255).to(torch.uint8)
    return ImageDataset(images, y, tuple(f"c{i}" for i in range(classes)), tuple(map(str, range(n))), source="mosaic")


def test_key_search_gradient_finds_a_planted_mosaic_key():
    """A key of one free colour per tile (16 tiles, 8 secrets: no grid reaches it): from random
    directions (agreement about 1/3), gradient ascent of the training loss finds the tiles' colours."""
    from learnlock.keys.keyed import KeyedNet
    from learnlock.keys.layers import create_key_layer

    layer = create_key_layer("mosaic", 3, 16, seed=11, tile=4)
    data = mosaic_shortcut(layer)
    scheme = {"family": "mosaic", "settings": layer.public_settings()}
    attack = create_attack("key-search-gradient", search_epochs=30, start="random")
    context = AttackContext(scheme=scheme, teacher=KeyedNet(layer, create_model("cnn", 4, 3, seed=0)))
    attack.train(data, "cnn", 0, HACKER, context, progress=False)
    rep = attack.report()
    assert rep["agreement_at_start"] < 0.4 and rep["agreement_with_true_key"] > 0.85, rep
    # the colour key is the one-tile case; a spectral key has no colour per tile
    with pytest.raises(LearnlockError, match="one colour direction per tile"):
        create_attack("key-search-gradient").transform(data, AttackContext(scheme={"family": "spectral", "settings": {}}))
    with pytest.raises(LearnlockError, match="no clean data"):
        create_attack("key-search-gradient", use_aux=True)
    with pytest.raises(LearnlockError, match="start"):
        create_attack("key-search-gradient", start="grid")


def test_key_search_gradient_finds_a_planted_block_subspace():
    """A block key's secret is a 6-dimensional subspace of the 45 non-DC patch directions: no grid.
    From a random subspace (agreement about 6/45), the min-max finds most of the one a class
    shortcut lives in, and its estimate stays a flip-closed block key of the scheme's shape."""
    from learnlock.keys.keyed import KeyedNet
    from learnlock.keys.layers import create_key_layer
    from learnlock.data import ImageDataset
    from learnlock.keys.layers.block import blocks, unblocks

    layer = create_key_layer("block", 3, 16, seed=11, k=4, dims=6)
    classes, n_per_class, g = 4, 48, torch.Generator().manual_seed(3)
    x = torch.randint(60, 196, (classes * n_per_class, 3, 16, 16), generator=g).float()
    y = torch.arange(classes).repeat_interleave(n_per_class)
    coef = torch.randn((classes, 4, 4, 6), generator=g)             # one pattern in S per class and block
    noise = unblocks(coef @ layer.basis.T, 3, 4)
    images = (x + 30 * noise[y] / noise.std()).round().clamp(0, 255).to(torch.uint8)
    data = ImageDataset(images, y, tuple(f"c{i}" for i in range(classes)), tuple(map(str, range(len(y)))),
                        source="block")
    scheme = {"family": "block", "settings": layer.public_settings()}
    attack = create_attack("key-search-gradient", search_epochs=20, start="random")
    context = AttackContext(scheme=scheme, teacher=KeyedNet(layer, create_model("cnn", classes, 3, seed=0)))
    attack.train(data, "cnn", 0, HACKER, context, progress=False)
    rep = attack.report()
    assert rep["agreement_at_start"] < 0.3 and rep["agreement_with_true_key"] > 0.6, rep
    est = attack.estimate
    assert est.family == "block" and est.basis.shape == layer.basis.shape
    flipped = blocks(unblocks(est.basis.T.reshape(6, 1, 1, 48), 3, 4).flip(-1), 4).reshape(6, 48)
    assert torch.allclose(flipped @ est.basis @ est.basis.T, flipped, atol=1e-4)   # S is closed under a mirror


def test_key_search_gradient_finds_a_planted_colour_key():
    from learnlock.keys.layers import luma_basis

    torch.manual_seed(5)
    c = luma_basis(0.9, 1)[:, 0].double()
    data, _ = shortcut_dataset(c)
    scheme = {"family": "colour", "settings": {"dims": 1, "luma": 0.9}}
    attack = create_attack("key-search-gradient", search_epochs=10, start="random")
    attack.train(data, "cnn", 0, HACKER, AttackContext(scheme=scheme, teacher=colour_teacher(c)), progress=False)
    assert attack.report()["agreement_with_true_key"] > 0.97, attack.report()


def test_key_search_refuses_what_it_cannot_search():
    data, _ = shortcut_dataset(torch.tensor([1.0, 0.0, 0.0]), n_per_class=4)
    with pytest.raises(LearnlockError, match="key family"):
        create_attack("key-search").transform(data, AttackContext())
    with pytest.raises(LearnlockError, match="one removed colour"):
        create_attack("key-search").transform(data, AttackContext(scheme={"family": "colour", "settings": {"dims": 2}}))
    with pytest.raises(LearnlockError, match="searches colour keys"):   # one azimuth per tile: no grid
        create_attack("key-search").transform(data, AttackContext(scheme={"family": "mosaic", "settings": {"tile": 2}}))
    with pytest.raises(LearnlockError, match="candidates"):
        create_attack("key-search", candidates=1)
    with pytest.raises(LearnlockError, match="no clean data"):
        create_attack("key-search", use_aux=True)


def test_orthogonal_projection_removes_a_planted_linear_shortcut():
    """A class-wise additive pattern is linearly separable: the logistic regression's directions
    span it, so after the projection less than 40 % of each class pattern's norm remains, and the
    test images get the same projection."""
    data, patterns = shortcut_dataset(None, amplitude=16)
    attack = create_attack("orthogonal-projection", steps=200)
    out = attack.transform(data, AttackContext(progress=False))
    assert out.images.shape == data.images.shape and torch.equal(out.labels, data.labels)
    assert attack.report()["linear_train_accuracy"] == 1.0
    q = attack.basis.double()
    assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-5)
    v = patterns.flatten(1).double()
    v = v - v.mean(0)  # a common offset is no class signal (the bias absorbs it)
    left = (v - (v @ q) @ q.T).norm(dim=1) / v.norm(dim=1)
    assert float(left.max()) < 0.4   # measured 0.35-0.36: 87 % of the energy removed (160 images, 768 values)
    # class means of the projected images no longer carry the patterns
    before = torch.stack([data.images[data.labels == k].double().mean(0) for k in range(4)]).flatten(1)
    after = torch.stack([out.images[out.labels == k].double().mean(0) for k in range(4)]).flatten(1)
    assert (after - after.mean(0)).norm() < 0.5 * (before - before.mean(0)).norm()
    test, _ = shortcut_dataset(None, n_per_class=3, seed=1)
    assert torch.equal(attack.transform_test(test).images, attack.project(test).images)
    with pytest.raises(LearnlockError, match="directions"):
        create_attack("orthogonal-projection", directions=9).transform(data, AttackContext())


def test_leaked_pairs_one_pair_fixes_the_colour_key():
    from learnlock.keys.layers import luma_basis

    torch.manual_seed(3)
    c = luma_basis(0.9, 1)[:, 0]
    originals, _ = shortcut_dataset(None, amplitude=0)
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(len(originals), 1, 16, 16, generator=g) * 2 - 1) * 20
    published = originals.with_images((originals.images.float() + m * c.view(1, 3, 1, 1)).round().clamp(0, 255)
                                      .to(torch.uint8))
    scheme = {"family": "colour", "settings": {"dims": 1, "luma": 0.9}}
    attack = create_attack("leaked-pairs", k=1)
    attack.transform(published, AttackContext(scheme=scheme, originals=originals.subset([7]),
                                              teacher=colour_teacher(c.double())))
    rep = attack.report()
    assert rep["pairs"] == ["7"] and rep["abs_cos_with_true_key"] > 0.99
    with pytest.raises(LearnlockError, match="pairs"):
        create_attack("leaked-pairs", k=2).transform(published, AttackContext(scheme=scheme,
                                                                              originals=originals.subset([7])))


def test_distill_proxy_never_trains_on_published_pixels(clean_setup):
    train, _, aux, teacher = clean_setup
    attack = create_attack("distill-proxy", queries=20)
    published = train.with_images(torch.zeros_like(train.images))  # what it must never see
    out = attack.transform(published, AttackContext(teacher=teacher, aux=aux))
    assert len(out) == 20 and set(out.ids) <= set(aux.ids)
    assert torch.equal(out.images, aux.subset([aux.ids.index(i) for i in out.ids]).images)
    assert torch.equal(out.labels, predict(teacher, out).argmax(1))
    assert torch.bincount(aux.subset([aux.ids.index(i) for i in out.ids]).labels).tolist() == [5, 5, 5, 5]
    with pytest.raises(LearnlockError, match="queries"):
        create_attack("distill-proxy", queries=1000).transform(published, AttackContext(teacher=teacher, aux=aux))


def test_adversarial_training_at_rho_reads_the_published_budget():
    attack = create_attack("adversarial-training-rho", steps=3)
    [cb] = attack.callbacks(AttackContext(rho=32 / 255))
    assert cb.pgd.eps == pytest.approx(32 / 255) and cb.pgd.step == pytest.approx(8 / 255)
    with pytest.raises(LearnlockError, match="rho"):
        attack.check_context(AttackContext(rho=32))
