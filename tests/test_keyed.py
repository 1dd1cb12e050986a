"""`keyed`: the key layer is frozen and reproducible from the secret, the noise lies in its blind
spot (up to the measured export residual), resume is exact, wrong keys are refused, and the
key-estimation attack finds a key that leaks (the generic guarantees are in test_protections.py)."""

import math

import pytest
import torch

from conftest import TINY, learnable_dataset, make_protection
from learnlock.attacks import AttackContext, create_attack
from learnlock.errors import LearnlockError
from learnlock.keys.layers import create_key_layer, family_params, list_key_layers
from learnlock.keys import check_key_matches, seed_from_secret
from learnlock.models import NetSpec
from learnlock.keys.keyed import KeyedNet, key_layer_of, keyed_spec
from learnlock.protections import ProtectionContext, create_protection
from learnlock.recipe import Recipe
from learnlock.training import apply_augment, draw_augment, fit

SETTINGS = {"colour": {"dims": 1}, "spectral": {"bins": 0.5}, "block": {"k": 4, "dims": 6},
            "mosaic": {"tile": 2, "dims": 1}}


def base(seed=1, classes=3, channels=3):
    return NetSpec.create("cnn", classes, channels, seed=seed, width=8)


def protection(family, key=None, **kw):
    prot = make_protection("keyed", ProtectionContext([key or base()], TINY), family=family, **{**SETTINGS[family], **kw})
    prot.progress = False
    return prot


@pytest.mark.parametrize("family", list_key_layers())
def test_key_layer_is_a_frozen_projector(family):
    layer = create_key_layer(family, 3, 8, seed=3, **SETTINGS[family])
    assert list(layer.parameters()) == []  # buffers only: no optimiser can train it
    g = torch.Generator().manual_seed(0)  # not the global RNG: the test must not depend on test order
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    p = layer.project(x)
    assert torch.allclose(layer.project(p), p, atol=1e-5)                      # idempotent
    # self-adjoint; the inner products are sums of 768 terms, so float32 error is absolute, not relative
    assert math.isclose(float((layer.project(x) * y).sum()), float((x * layer.project(y)).sum()), abs_tol=1e-3)
    assert layer(p).abs().max() < 1e-5                                          # S is annihilated
    assert 0 < layer.cost() < 1
    # it commutes with the augmentations its family gives the authorized recipe (flip; spectral:
    # circular crops; block: crops by multiples of k)
    assert torch.allclose(layer.project(x.flip(3)), p.flip(3), atol=1e-5)
    for augment in ("roll+flip", "crop+flip"):
        recipe = type(layer).authorized_recipe(Recipe(augment=augment, crop_padding=2), layer.public_settings())
        draw = draw_augment(4, recipe, torch.Generator().manual_seed(0))
        assert torch.allclose(layer.project(apply_augment(x, draw)), apply_augment(p, draw), atol=1e-5), augment


@pytest.mark.parametrize("family", [f for f in list_key_layers() if "luma" in family_params(f)])
@pytest.mark.parametrize("dims", [1, 2])
def test_luma_directions(family, dims):
    """`luma` fixes each removed colour's squared cosine with the luma axis (so grayscale keeps that
    share of the noise) and draws its azimuth from the secret; the layer stays a projector."""
    from learnlock.keys.layers import LUMA_AXIS

    kw = {"dims": dims, "luma": 0.8, **({"fmax": 6.0} if family == "spectral" else {})}
    layer = create_key_layer(family, 3, 16, seed=5, **kw)
    other = create_key_layer(family, 3, 16, seed=6, **kw)
    rows = layer.basis_map.flatten(0, 1) if hasattr(layer, "basis_map") else layer.basis[None]
    chosen = rows.abs().sum((1, 2)) > 0
    first = rows[chosen][:, :, 0].double()
    assert torch.allclose((first @ LUMA_AXIS) ** 2, torch.full((len(first),), 0.8, dtype=torch.float64), atol=1e-5)
    gram = rows[chosen].transpose(1, 2) @ rows[chosen]
    assert torch.allclose(gram, torch.eye(dims).expand_as(gram), atol=1e-5)
    assert not torch.equal(rows, other.basis_map.flatten(0, 1) if hasattr(other, "basis_map") else other.basis[None])
    assert layer.public_settings()["luma"] == 0.8
    p = layer.project(torch.randn(2, 3, 16, 16))
    assert torch.allclose(layer.project(p), p, atol=1e-5)
    # grayscale keeps about `luma` of the noise's energy along the first direction (random: about 1/3)
    noise = layer.project(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    kept = (noise * LUMA_AXIS.float().view(1, 3, 1, 1)).sum(1).pow(2).sum() / noise.pow(2).sum()
    assert 0.7 < float(kept) < 0.9 if dims == 1 else 0.35 < float(kept) < 0.9
    for bad in (1.5, -0.1, True):
        with pytest.raises(LearnlockError, match="luma"):
            create_key_layer(family, 3, 16, seed=5, luma=bad)
    if family == "spectral":
        with pytest.raises(LearnlockError, match="RGB"):
            create_key_layer(family, 1, 16, seed=5, luma=0.5)


@pytest.mark.parametrize("family", list_key_layers())
def test_key_is_reproducible_from_the_secret_and_never_trained(family, tmp_path):
    seed = seed_from_secret("correct horse")
    a = keyed_spec(NetSpec.create("cnn", 3, 3, seed=seed, width=8), family, 8, SETTINGS[family])
    b = keyed_spec(NetSpec.create("cnn", 3, 3, seed=seed, width=8), family, 8, SETTINGS[family])
    other = keyed_spec(NetSpec.create("cnn", 3, 3, seed=seed_from_secret("wrong"), width=8), family, 8,
                       SETTINGS[family])
    assert a.fingerprint == b.fingerprint != other.fingerprint
    assert key_layer_of(a).agreement(key_layer_of(other)) < 0.9  # another secret, another blind spot
    a.save(tmp_path / "k.safetensors")
    assert NetSpec.load(tmp_path / "k.safetensors").fingerprint == a.fingerprint
    secret_free = str(a.kwargs)
    assert "correct horse" not in secret_free and str(seed) not in secret_free  # kwargs are public
    model = a.build()
    before = {k: v.clone() for k, v in model.layer.state_dict().items()}
    fit(model, learnable_dataset(n_per_class=4, classes=3, size=8), TINY, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.layer.state_dict().items())
    assert not any(n.startswith("key.") for n, _ in model.named_parameters())


@pytest.mark.parametrize("family", list_key_layers())
def test_noise_lies_in_the_blind_spot(family):
    data = learnable_dataset(n_per_class=6, classes=3, size=8)
    prot = protection(family)
    x_q = prot.apply(data)
    key = prot.issued_keys(data)[0]
    layer = key_layer_of(key)
    res = prot.residual
    assert res["inside_rms_levels"] > 1.0  # there is noise, and most of it is inside S
    assert res["outside_energy_share"] < 0.1, res
    d = x_q.float() - data.images.float()
    assert (d.abs().max() / 255) <= prot.settings.rho + 1e-9
    # the authorized network's first layer maps x_u and x to the same values within the residual
    model = key.build().eval()
    assert isinstance(model, KeyedNet)
    with torch.no_grad():
        gap = (model.layer(x_q.float() / 255) - model.layer(data.float_images())).abs().max().item()
    assert gap <= res["outside_max_levels"] / 255 + 1e-5
    # a network without the key sees all of the noise
    assert (layer.project(d).pow(2).sum() / d.pow(2).sum()) > 0.9


def test_keyed_manifest_resume_and_wrong_key(tmp_path):
    from learnlock.data.published import load_published

    data = learnable_dataset(n_per_class=4, classes=3, size=8)
    full = protection("spectral", max_rounds=3).apply(data)
    protection("spectral", max_rounds=2).apply(data, workdir=tmp_path / "w")
    resumed = protection("spectral", max_rounds=3)
    assert torch.equal(resumed.apply(data, workdir=tmp_path / "w"), full)  # resume after a stop: same bytes
    with pytest.raises(LearnlockError, match="other settings or data"):  # another key: refused, not mixed
        protection("spectral", key=base(seed=2), max_rounds=3).apply(data, workdir=tmp_path / "w")
    prot = protection("spectral")
    path = prot.protect(data, tmp_path / "pub")
    _, manifest = load_published(path)
    key = prot.issued_keys(data)[0]
    assert manifest["authorized"]["recipe"]["augment"] == "roll+flip"  # circular crops keep S exact
    assert manifest["extra"]["key"]["family"] == "spectral" and manifest["extra"]["residual"]
    assert check_key_matches(key, manifest) == 0
    with pytest.raises(LearnlockError, match="wrong key"):
        check_key_matches(keyed_spec(base(seed=5), "spectral", 8, SETTINGS["spectral"]), manifest)
    with pytest.raises(LearnlockError, match="one authorized network"):
        create_protection("keyed", ProtectionContext([base(1), base(2)]))
    with pytest.raises(LearnlockError, match="RGB"):
        protection("colour", key=base(channels=1)).apply(learnable_dataset(n_per_class=4, classes=3, size=8,
                                                                            channels=1))


@pytest.mark.parametrize("family", list_key_layers())
def test_key_estimation_finds_a_leaky_key(family):
    """Noise with large variance inside S is found by second-order statistics, with and without
    clean data; the estimate is a key layer the attacker trains behind."""
    g = torch.Generator().manual_seed(0)
    key = keyed_spec(base(), family, 16, SETTINGS[family])
    layer = key_layer_of(key)
    # block: a 48-dimensional patch covariance needs more images; mosaic: a covariance per tile
    n = 80 if family in ("block", "mosaic") else 20
    clean = learnable_dataset(n_per_class=n, classes=3, size=16)
    noise = layer.project(torch.randn(len(clean), 3, 16, 16, generator=g))
    noise = noise * (30 / noise.abs().amax((1, 2, 3), keepdim=True))
    pub = clean.with_images((clean.images.float() + noise).round().clamp(0, 255).to(torch.uint8))
    teacher = key.build()
    scheme = {"family": family, "settings": layer.public_settings()}
    for aux in (None, learnable_dataset(n_per_class=n, classes=3, size=16, seed=1)):
        attack = create_attack("key-estimate")
        attack.train(pub, "cnn", 0, TINY, AttackContext(teacher=teacher, aux=aux, scheme=scheme), progress=False)
        # a random guess of the same size agrees about dims / channels * bins (<= 1/3 here)
        assert attack.report()["agreement_with_true_key"] > (0.7 if aux is not None else 0.5), (family, aux is None)
    with pytest.raises(LearnlockError, match="key family"):
        create_attack("key-estimate").train(pub, "cnn", 0, TINY, AttackContext(), progress=False)


def test_cli_protect_keyed_then_train(tmp_path, capsys):
    from conftest import write_folder
    from learnlock.cli import main

    write_folder(tmp_path / "src", per_class=6, size=(8, 8))
    out = tmp_path / "pub"
    main(["protect", "--method", "keyed", "--data", f"folder:{tmp_path / 'src'}", "--authorized", "cnn",
          "--key-secret", "s3cret", "--set", "max_rounds=1", "--set", "noise_steps=1", "--set", "batch_size=8",
          "--out", str(out), "--no-progress", "--authorized-epochs", "1", "--batch-size", "8"])
    key_path = tmp_path / "pub.key.safetensors"
    key = NetSpec.load(key_path)
    assert key.arch == "keyed" and key.kwargs["base"] == "cnn"
    # a flat folder has no test split: its training images are refused as the test set
    assert main(["train", "--authorized", str(key_path), "--data", str(out), "--no-progress",
                 "--test", f"folder:{tmp_path / 'src'}"]) == 2
    assert "shares 18 of its 18 images with the training data" in capsys.readouterr().err
    write_folder(tmp_path / "test", per_class=6, size=(8, 8), seed=1)
    main(["train", "--authorized", str(key_path), "--data", str(out), "--no-progress",
          "--test", f"folder:{tmp_path / 'test'}"])
    assert "test accuracy" in capsys.readouterr().out
    wrong = keyed_spec(NetSpec.create("cnn", 3, 3, seed=7), "colour", 8)
    wrong.save(tmp_path / "wrong.safetensors")
    assert main(["train", "--authorized", str(tmp_path / "wrong.safetensors"), "--data", str(out),
                 "--no-progress", "--out", str(tmp_path / "w.safetensors")]) == 2
    assert "wrong key" in capsys.readouterr().err


def test_item_targets_follow_the_exact_batches():
    """One-hot targets of the true labels through ItemTargets give the same weights as the labels:
    any misaligned batch (wrong items' targets) would change them."""
    import torch.nn.functional as F

    from learnlock.models import create_model
    from learnlock.callbacks import ItemTargets

    data = learnable_dataset(n_per_class=6, classes=3, size=8)
    recipe = Recipe(name="tiny", epochs=2, batch_size=5)
    a = fit(create_model("cnn", 3, 3, seed=0, width=8), data, recipe, progress=False)
    b = fit(create_model("cnn", 3, 3, seed=0, width=8), data, recipe, progress=False,
            callbacks=[ItemTargets(F.one_hot(data.labels, 3).float())])
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))
    shuffled = F.one_hot(data.labels.roll(1), 3).float()
    c = fit(create_model("cnn", 3, 3, seed=0, width=8), data, recipe, progress=False,
            callbacks=[ItemTargets(shuffled)])
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), c.parameters()))


def test_teacher_aware_targets():
    data = learnable_dataset(n_per_class=6, classes=3, size=8)
    prot = protection("colour", teacher_mix=0.5, max_rounds=1)
    prot.apply(data)
    soft = prot._soft
    assert soft.shape == (len(data), 3) and torch.allclose(soft.sum(1), torch.ones(len(data)))
    assert (soft.gather(1, data.labels[:, None]) >= 0.5).all()  # half of the mass stays on the label
    with pytest.raises(LearnlockError, match="teacher_mix"):
        protection("colour", teacher_mix=1.5)


def test_default_budget_and_luma():
    """The measured defaults: 32/255, and a colour key at a fixed luma share (a random one may be
    isoluminant); spectral keys keep random colours; nonsense is refused."""
    from learnlock.keys.layers import LUMA_AXIS

    data = learnable_dataset(n_per_class=2, classes=3, size=8)
    prot = create_protection("keyed", ProtectionContext([base()]))
    assert prot.settings.rho == 32 / 255
    layer = key_layer_of(prot.key_for(data))
    assert layer.public_settings()["luma"] == 0.9
    assert abs(float((layer.basis[:, 0].double() @ LUMA_AXIS) ** 2) - 0.9) < 1e-5
    spectral = create_protection("keyed", ProtectionContext([base()]), family="spectral")
    assert "luma" not in key_layer_of(spectral.key_for(data)).public_settings()
    random = create_protection("keyed", ProtectionContext([base()]), luma=None)
    assert "luma" not in key_layer_of(random.key_for(data)).public_settings()
    with pytest.raises(LearnlockError, match="luma is auto"):
        create_protection("keyed", ProtectionContext([base()]), luma="grey")


def test_cone_estimate_uses_the_stated_luma_share():
    """An attacker who knows the luma share searches only its cone: the direction of excess
    variance on the cone is found, and the estimate lies on the cone."""
    from learnlock.keys.layers import LUMA_AXIS, cone_direction, luma_basis

    torch.manual_seed(0)
    for luma in (0.2, 0.6, 0.9):
        b = luma_basis(luma, 1)[:, 0].double()
        a = torch.randn(3, 3, dtype=torch.float64)
        cr = a @ a.T + torch.eye(3, dtype=torch.float64)
        cp = cr + 0.05 * float(b @ cr @ b) * torch.outer(b, b)
        est = cone_direction(cp, cr, luma)
        assert abs(float(est @ LUMA_AXIS) ** 2 - luma) < 1e-6
        assert abs(float(est @ b)) > 0.999


@pytest.mark.parametrize("family", list_key_layers())
def test_key_layer_keeps_its_blind_spot_under_bf16_autocast(family):
    """fit trains in bf16 autocast on a GPU: the key layer must still remove all of S."""
    layer = create_key_layer(family, 3, 8, seed=3, **SETTINGS[family])
    g = torch.Generator().manual_seed(0)
    p = layer.project(torch.randn(4, 3, 8, 8, generator=g))  # noise inside the blind spot
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(p)
    assert out.dtype == torch.float32 and out.abs().max() < 1e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_block_key_commutes_with_flips_and_shifts_by_k(channels):
    """The block key removes one flip-closed subspace in every k x k block: it is a projector on
    grey and RGB images and commutes with flips and shifts by multiples of k (not with others)."""
    layer = create_key_layer("block", channels, 12, seed=4, k=4, dims=5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, channels, 12, 12, generator=g)
    p = layer.project(x)
    assert torch.allclose(layer.project(p), p, atol=1e-5)
    b = layer.basis.double()
    assert torch.allclose(b.T @ b, torch.eye(5, dtype=torch.float64), atol=1e-5)
    mirror = b.view(channels, 4, 4, 5).flip(2).reshape(-1, 5)  # the mirrored basis spans the same subspace
    assert torch.allclose(b @ (b.T @ mirror), mirror, atol=1e-5)
    assert torch.allclose(layer.project(x.flip(3)), p.flip(3), atol=1e-5)
    assert torch.allclose(layer.project(x.roll((4, -8), (2, 3))), p.roll((4, -8), (2, 3)), atol=1e-5)
    assert not torch.allclose(layer.project(x.roll(1, 3)), p.roll(1, 3), atol=1e-3)
    assert layer.dim() == 5 * 9 and math.isclose(layer.cost(), 5 / (channels * 16))
    other = create_key_layer("block", channels, 12, seed=5, k=4, dims=5)
    assert layer.agreement(other) < 0.9


def test_block_key_refuses_bad_settings():
    for kw, match in [({"k": 5}, "not a multiple of k=5"), ({"k": 1}, "integer >= 2"), ({"k": True}, "integer >= 2"),
                      ({"dims": 0}, "dims"), ({"dims": 16}, "dims"), ({"dims": 2.5}, "dims"),
                      ({"fmin": 2, "fmax": 1}, "fmin <= fmax"), ({"dims": 4, "fmax": 1.0}, "dims"),
                      ({"luma": 0.5}, r"unknown setting\(s\) luma; valid settings: k, dims, fmin, fmax, dc")]:
        with pytest.raises(LearnlockError, match=match):
            create_key_layer("block", 1, 12, seed=0, **kw)
    layer = create_key_layer("block", 1, 12, seed=0, k=4, dims=3)
    with pytest.raises(LearnlockError, match="multiples of k"):
        layer.project(torch.zeros(1, 1, 10, 12))


def test_block_key_gives_the_authorized_recipe_shifts_by_k(tmp_path):
    """The keyed protection's authorized recipe (written into the manifest) crops only by multiples
    of k, so the authorized net cannot be trained with an augmentation that breaks the key."""
    from learnlock.data.published import load_published

    prot = create_protection("keyed", ProtectionContext([base(channels=1)], Recipe(augment="crop+flip", crop_padding=3)),
                             preset="smoke", family="block", k=4, dims=6)
    prot.progress = False
    assert prot.recipe.crop_step == 4 and prot.recipe.crop_padding == 4 and prot.recipe.augment == "crop+flip"
    data = learnable_dataset(n_per_class=4, classes=3, size=8, channels=1)
    prot.protect(data, tmp_path / "pub")
    _, manifest = load_published(tmp_path / "pub")
    assert manifest["authorized"]["recipe"]["crop_step"] == 4
    assert manifest["extra"]["key"]["family"] == "block" and manifest["extra"]["key"]["settings"]["k"] == 4
    with pytest.raises(LearnlockError, match="crop_step"):
        Recipe(crop_padding=3, crop_step=2)


def test_block_key_is_read_from_one_leaked_pair():
    """One leaked (published, original) pair gives the block key: its change lies in S in every block."""
    layer = create_key_layer("block", 1, 16, seed=2, k=4, dims=4)
    change = layer.project(torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))).double()
    est = type(layer).from_changes(change, layer)
    assert layer.agreement(est) > 0.99


def test_fit_box_keeps_more_of_the_noise_inside_the_blind_spot():
    """On images with black backgrounds the export's [0, 1] clipping cuts noise out of S; fitting
    the box in every min-min step leaves less of it outside."""
    data = learnable_dataset(n_per_class=6, classes=3, size=8, channels=1)
    data = data.with_images((data.images.float() - 60).clamp(0, 255).to(torch.uint8))  # much of it black
    shares = []
    for fit_box in (0, 4):
        prot = protection("block", key=base(channels=1), fit_box=fit_box)
        prot.apply(data)
        shares.append(prot.residual["outside_energy_share"])
    assert shares[1] < shares[0], shares


@pytest.mark.parametrize("channels", [1, 3])
def test_block_key_with_dc_holds_the_block_mean_and_non_negative_noise(channels):
    """`dc`: S holds the constant patch of every channel (the block mean), so a black block admits
    non-negative noise in S; without it, every nonzero noise in S has a negative value somewhere."""
    layer = create_key_layer("block", channels, 12, seed=4, k=4, dims=channels + 3, dc=True)
    b = layer.basis.double()
    assert torch.allclose(b.T @ b, torch.eye(channels + 3, dtype=torch.float64), atol=1e-5)
    flat = torch.ones(2, channels, 12, 12) * torch.rand(2, channels, 1, 1)   # constant blocks
    assert layer(flat).abs().max() < 1e-5                                   # removed: the mean is in S
    assert torch.allclose(layer.project(flat), flat, atol=1e-5)
    mirror = b.view(channels, 4, 4, -1).flip(2).reshape(channels * 16, -1)
    assert torch.allclose(b @ (b.T @ mirror), mirror, atol=1e-5)            # still flip-closed
    plain = create_key_layer("block", channels, 12, seed=4, k=4, dims=channels + 3)
    assert plain.project(flat).abs().max() < 1e-5                           # fmin 1: the mean is outside S
    # the attacker's estimates keep the public part exactly
    est = type(layer).from_changes(layer.project(torch.randn(1, channels, 12, 12)).double(), layer)
    assert est.dc and layer.agreement(est) > 0.99


def test_block_key_refuses_bad_dc_settings():
    for kw, match in [({"dc": "yes"}, "dc is true"), ({"dc": True, "dims": 1}, "dims is the number"),
                      ({"dc": True, "fmin": 0.0}, "already in S")]:
        with pytest.raises(LearnlockError, match=match):
            create_key_layer("block", 1, 12, seed=0, k=4, **{"dims": 4, **kw})


def test_fit_box_with_dc_keeps_the_exported_noise_in_s_on_black_images():
    """With the block mean in S and the box fitted in the min-min, almost none of the exported
    noise lies outside S even where the image is black (bound: 2 % of its energy; measured ~0)."""
    data = learnable_dataset(n_per_class=6, classes=3, size=8, channels=1)
    data = data.with_images((data.images.float() - 60).clamp(0, 255).to(torch.uint8))  # much of it black
    prot = protection("block", key=base(channels=1), dims=4, dc=True, fit_box=6)
    out = prot.apply(data)
    assert prot.residual["outside_energy_share"] < 0.02, prot.residual
    assert prot.residual["inside_rms_levels"] > 1                            # and the noise is not gone
    assert (out.float() - data.images.float()).abs().max() <= math.ceil(prot.settings.rho * 255)


def test_classwise_fit_box_fits_a_black_image():
    """Class-wise noise with fit_box: each class's delta is non-negative (the box of a black image),
    so black backgrounds do not cut it at export; it stays in S (up to 8-bit rounding)."""
    data = learnable_dataset(n_per_class=6, classes=3, size=8, channels=1)
    data = data.with_images((data.images.float() - 60).clamp(0, 255).to(torch.uint8))
    prot = protection("block", key=base(channels=1), dims=4, dc=True, fit_box=6, classwise=True)
    out = prot.apply(data)
    change = out.float() - data.images.float()
    assert change.min() >= -1                                               # only rounding below zero
    assert prot.residual["outside_energy_share"] < 0.05, prot.residual
    assert prot.residual["inside_rms_levels"] > 1


def test_block_dc_off_keeps_the_keys_drawn_before_it():
    """dc=False (the default) stays out of the key's settings, so a block key's secret draw is the same
    as before the setting existed; dc=True draws another key."""
    from learnlock.protections.keyed import KeyedSettings

    plain = KeyedSettings(family="block", k=4, dims=4).key_settings()
    assert "dc" not in plain and KeyedSettings(family="block", k=4, dims=4, dc=True).key_settings()["dc"] is True
    b = base(channels=1)
    old = keyed_spec(b, "block", 8, {"k": 4, "dims": 4, "fmin": 1.0, "fmax": None})
    assert keyed_spec(b, "block", 8, plain).fingerprint == old.fingerprint
    with pytest.raises(LearnlockError, match="fit_box"):
        KeyedSettings(family="block", fit_box=-1)


@pytest.mark.parametrize("family", list_key_layers())
def test_wrong_key_keeps_the_scheme_and_changes_the_secret(family):
    from learnlock.keys import wrong_key

    key = keyed_spec(base(seed=1), family, 8, SETTINGS[family])
    other = wrong_key(key, 2)
    assert other.arch == "keyed" and other.kwargs["family"] == family and other.kwargs["base"] == "cnn"
    assert other.kwargs["key_settings"] == key.kwargs["key_settings"]  # the public scheme is the same
    assert other.fingerprint != key.fingerprint
    # another secret: the key layer's buffers differ, not only the base network's weights
    mine, theirs = key_layer_of(key).state_dict(), key_layer_of(other).state_dict()
    assert any(not torch.equal(mine[k], theirs[k]) for k in mine if mine[k].is_floating_point())
    plain = base(seed=3)
    assert wrong_key(plain, 4).arch == "cnn" and wrong_key(plain, 4).kwargs == plain.kwargs
    with pytest.raises(LearnlockError, match="rebuilds the authorized key"):
        wrong_key(plain, 3)


def test_mosaic_key_has_a_colour_per_tile_and_trains_without_shifts(tmp_path):
    """The mosaic key removes one secret colour per t x t tile (mirror tiles share it): a projector
    that commutes with flips and not with shifts, so the authorized recipe keeps flips and drops
    crops; the manifest carries that recipe."""
    from learnlock.data.published import load_published
    from learnlock.keys.layers import LUMA_AXIS

    layer = create_key_layer("mosaic", 3, 12, seed=4, tile=2, luma=0.9)
    b = layer.basis_map.double()                                       # 6 x 6 x 3 x 1
    assert torch.allclose(b.flip(1), b) and torch.allclose(b.norm(dim=2), torch.ones(6, 6, 1, dtype=torch.float64))
    assert torch.allclose((b[..., 0] @ LUMA_AXIS) ** 2, torch.full((6, 6), 0.9, dtype=torch.float64), atol=1e-5)
    assert len({tuple(v.round(decimals=4).tolist()) for v in b[:, :3, :, 0].reshape(-1, 3)}) == 18  # 18 secrets
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    p = layer.project(x)
    assert torch.allclose(layer.project(x.flip(3)), p.flip(3), atol=1e-5)
    assert not torch.allclose(layer.project(x.roll(2, 3)), p.roll(2, 3), atol=1e-3)  # a shift by a tile leaves S
    # every pixel's projection lies along its tile's direction
    d = b.repeat_interleave(2, 0).repeat_interleave(2, 1)[..., 0]      # 12 x 12 x 3
    along = (p[0].permute(1, 2, 0).double() * d).sum(-1, keepdim=True) * d
    assert torch.allclose(p[0].permute(1, 2, 0).double(), along, atol=1e-5)
    for kw, match in [({"tile": 5}, "must divide"), ({"tile": 0}, "must divide"), ({"dims": 3}, "dims")]:
        with pytest.raises(LearnlockError, match=match):
            create_key_layer("mosaic", 3, 12, seed=0, **kw)
    with pytest.raises(LearnlockError, match="RGB"):
        create_key_layer("mosaic", 1, 12, seed=0)
    prot = create_protection("keyed", ProtectionContext([base()], Recipe(augment="crop+flip", crop_padding=2)),
                             preset="smoke", family="mosaic", tile=2)
    prot.progress = False
    assert prot.recipe.crop_padding == 0 and "flip" in prot.recipe.augment
    prot.protect(learnable_dataset(n_per_class=4, classes=3, size=8), tmp_path / "pub")
    _, manifest = load_published(tmp_path / "pub")
    assert manifest["authorized"]["recipe"]["crop_padding"] == 0
    assert manifest["extra"]["key"]["settings"] == {"tile": 2, "dims": 1, "luma": 0.9}   # luma auto: 0.9


def test_mosaic_key_is_read_from_one_leaked_pair():
    """One leaked pair gives every tile's colour: the change lies along it at every pixel."""
    layer = create_key_layer("mosaic", 3, 16, seed=2, tile=4, luma=0.9)
    change = layer.project(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))).double()
    assert layer.agreement(type(layer).from_changes(change, layer)) > 0.999


@pytest.mark.parametrize("family", list_key_layers())
def test_pattern_noise_is_one_pattern_per_class_in_the_blind_spot(family):
    """noise=pattern: no surrogate; every item of a class gets the same change, it lies in S, fills
    the L-inf budget, and (keys whose S is the same at every block or pixel) repeats every period."""
    data = learnable_dataset(n_per_class=5, classes=3, size=8)
    data = data.with_images((data.images.float() * 0.5 + 64).round().to(torch.uint8))   # nothing clipped
    prot = protection(family, noise="pattern", period=4)
    out = prot.apply(data)
    change = out.float() - data.images.float()
    layer = key_layer_of(prot.issued_keys(data)[0])
    assert prot.residual["outside_energy_share"] < 0.01, prot.residual       # 8-bit rounding only
    assert (layer.project(change).pow(2).sum() / change.pow(2).sum()) > 0.99
    for c in range(3):
        rows = change[data.labels == c]
        assert (rows - rows[0]).abs().max() <= 1.0                           # one pattern per class (rounding)
    assert not torch.allclose(change[data.labels == 0][0], change[data.labels == 1][0], atol=2)
    assert change.abs().amax((1, 2, 3)).min() >= math.floor(prot.settings.rho * 255) - 1   # the budget is used
    if family in ("colour", "block"):
        assert (change[..., :4] - change[..., 4:]).abs().max() <= 1.0       # periodic (to the rounding)
        assert (change[..., :4, :] - change[..., 4:, :]).abs().max() <= 1.0
    assert prot.manifest_extra()["rounds"] == 0                             # no min-min ran


def test_pattern_noise_refuses_settings_it_would_ignore():
    for kw, words in (({"teacher_mix": 0.5}, "teacher_mix"), ({"fit_box": 2}, "fit_box"),
                      ({"period": 6}, "multiple of k"), ({"period": 0}, "period")):
        with pytest.raises(LearnlockError, match=words):
            protection("block", noise="pattern", **kw)
    with pytest.raises(LearnlockError, match="min-min or pattern"):
        protection("colour", noise="lsp")
