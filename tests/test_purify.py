"""Diffusion purification (`purify`, LE; `purify-diffpure`, DiffPure) with a DDPM trained on the
auxiliary clean set: output format for 28x28x1 and 32x32x3, the DDPM cache (no retraining,
identical bytes, retraining when aux or settings change), a denoising case it must get right,
a trained DDPM that denoises better than an untrained one, and bad input. Tiny settings (T = 50,
the smallest allowed) keep the file to seconds on one CPU core."""

import json
from pathlib import Path

import pytest
import torch

from conftest import make_attack
from learnlock.attacks import ddpm
from learnlock.attacks import AttackContext, get_attack
from learnlock.attacks.purify import DiffPureSettings
from learnlock.data import ImageDataset
from learnlock.errors import LearnlockError

ATTACKS = ("purify", "purify-diffpure")
COLOURS = [[40, 200, 90], [220, 60, 60], [60, 60, 220], [200, 200, 40]]


def random_set(n, channels, size, seed=0, source="random") -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 3
    return ImageDataset(x, y, ("a", "b", "c"), tuple(f"{source}/{i}" for i in range(n)), source=source)


def flat_set(colours, size=16, reps=1) -> ImageDataset:
    x = torch.tensor(colours, dtype=torch.uint8)[:, :, None, None].expand(-1, -1, size, size)
    x = x.repeat(reps, 1, 1, 1).contiguous()
    n = len(x)
    return ImageDataset(x, torch.zeros(n, dtype=torch.long), ("flat",), tuple(map(str, range(n))), source="flat")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Shared by the format tests: both attacks use the same DDPM settings, so one DDPM per shape."""
    return tmp_path_factory.mktemp("purify")


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", ATTACKS)
def test_purified_images_keep_format(name, channels, size, workdir):
    published = random_set(5, channels, size, seed=1, source="published")   # 2 batches of 4 and 1
    aux = random_set(12, channels, size, seed=2, source="aux")
    attack = make_attack(name, batch_size=4)
    out = attack.transform(published, AttackContext(aux=aux, workdir=workdir, progress=False))
    assert out.images.dtype == torch.uint8 and out.images.device.type == "cpu"
    assert out.images.shape == published.images.shape
    assert torch.equal(out.labels, published.labels) and out.ids == published.ids
    assert out.classes == published.classes and out.source == "published purified"
    assert not torch.equal(out.images, published.images)
    assert 10 < out.images.float().mean().item() < 245   # not collapsed to black or white
    report = attack.ddpm_report
    assert report["final_loss"] > 0 and torch.isfinite(torch.tensor(report["final_loss"]))
    assert report["denoising_split"] == "heldout" and report["denoising_images"] == 1
    assert [r["t"] for r in report["denoising"]] == [2, 5, 12, 25]   # 0.05, 0.1, 0.25, 0.5 of T = 50
    assert all(torch.isfinite(torch.tensor([r["eps_mse"], r["x0_mse"], r["noisy_mse"]])).all()
               for r in report["denoising"])
    assert report["purification"]["images"] == 5 and report["purification"]["attack"] == name
    json.dumps(report)   # the audit writes it as JSON


def test_zero_guidance_is_diffpure(workdir):
    """LE with both guidance scales at 0 is DiffPure, byte for byte (same DDPM, same noise)."""
    published = random_set(5, 1, 28, seed=1, source="published")
    ctx = AttackContext(aux=random_set(12, 1, 28, seed=2, source="aux"), workdir=workdir, progress=False)
    plain = make_attack("purify-diffpure").transform(published, ctx)
    unguided = make_attack("purify", guidance_pixel=0.0, guidance_perceptual=0.0).transform(published, ctx)
    guided = make_attack("purify").transform(published, ctx)
    assert torch.equal(plain.images, unguided.images)
    assert not torch.equal(plain.images, guided.images)


def test_unet_takes_sizes_that_its_levels_do_not_divide():
    """Four levels need sides divisible by 8; 28 x 28 and 30 x 26 are padded and cropped back."""
    unet = ddpm.build_unet(DiffPureSettings(channels=(8, 8, 8, 8)).ddpm(), 1, (28, 28))
    for shape in [(2, 1, 28, 28), (2, 1, 30, 26)]:
        with torch.no_grad():
            eps = ddpm.predict_eps(unet, torch.randn(shape), 7)
        assert eps.shape == shape and torch.isfinite(eps).all()
    unet3 = ddpm.build_unet(DiffPureSettings(channels=(8, 8, 8, 8)).ddpm(), 3, (32, 32))
    with torch.no_grad():
        assert ddpm.predict_eps(unet3, torch.randn(2, 3, 32, 32), 7).shape == (2, 3, 32, 32)


def test_ddpm_cache(tmp_path, monkeypatch):
    trained = []
    original = ddpm.train_ddpm

    def counting(*args, **kwargs):
        trained.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ddpm, "train_ddpm", counting)
    published = random_set(3, 1, 12, seed=1, source="published")
    aux = random_set(10, 1, 12, seed=2, source="aux")
    settings = {"samples": 4}
    ctx = AttackContext(aux=aux, workdir=tmp_path, progress=False)

    first = make_attack("purify-diffpure", **settings)
    out1 = first.transform(published, ctx)
    assert len(trained) == 1 and first.ddpm_report["cached"] is False
    folder = Path(first.ddpm_report["folder"])
    assert folder.parent == tmp_path / "ddpm"
    weights = folder / "diffusion_pytorch_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert json.loads((folder / "config.json").read_text())["block_out_channels"] == [8, 16]
    assert (folder / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.ddpm_report["samples_png"] == str(folder / "samples.png")

    # a new attack object (as in a new process): loads the weights, same bytes out
    second = make_attack("purify-diffpure", **settings)
    out2 = second.transform(published, ctx)
    assert len(trained) == 1 and second.ddpm_report["cached"] is True
    assert weights.stat().st_mtime_ns == mtime
    assert second.ddpm_report["final_loss"] == first.ddpm_report["final_loss"]
    assert torch.equal(out1.images, out2.images)

    # one pixel of aux changed: a new DDPM, in a new folder
    pixels = aux.images.clone()
    pixels[0, 0, 0, 0] ^= 1
    # (no samples from here on: they are not part of the key, and each grid costs T UNet calls)
    third = make_attack("purify-diffpure")
    third.transform(published, AttackContext(aux=aux.with_images(pixels), workdir=tmp_path, progress=False))
    assert len(trained) == 2 and third.ddpm_report["cached"] is False
    # a DDPM setting (the seed) changed: a new DDPM too; a purification setting (t_star) did not
    make_attack("purify-diffpure", seed=1).transform(published, ctx)
    assert len(trained) == 3
    make_attack("purify-diffpure", t_star=2).transform(published, ctx)
    assert len(trained) == 3
    assert len(list((tmp_path / "ddpm").iterdir())) == 3


@pytest.mark.parametrize("name", ATTACKS)
def test_purification_removes_noise_from_flat_images(name, tmp_path_factory):
    """A DDPM trained on flat colours denoises a flat image drowned in Gaussian noise (std 50 of 255)."""
    aux = flat_set(COLOURS, reps=4)
    clean = flat_set(COLOURS[:2])
    g = torch.Generator().manual_seed(0)
    noisy = (clean.images.float() + 50 * torch.randn(clean.images.shape, generator=g)).round().clamp(0, 255)
    published = clean.with_images(noisy.to(torch.uint8))
    attack = get_attack(name)(channels=(8, 16), train_steps=60, train_batch_size=16, lr=1e-2,
                              num_train_timesteps=50, t_star=10, samples=0)
    workdir = tmp_path_factory.getbasetemp() / "purify-flat"   # both attacks share one DDPM
    out = attack.transform(published, AttackContext(aux=aux, workdir=workdir, progress=False))

    def mse(x):
        return ((x.float() - clean.images.float()) ** 2).mean().item()

    assert mse(out.images) < 0.8 * mse(published.images)   # measured: 0.53 (DiffPure), 0.40 (LE)


def test_training_lowers_the_denoising_error_and_repeats_exactly():
    """Training through fit must train the UNet: a lower epsilon error than the same UNet untrained
    at every noise level, on the training images; and the same seed gives the same weights."""
    aux = flat_set(COLOURS, size=8, reps=4)
    config = DiffPureSettings(channels=(8, 16), train_steps=20, train_batch_size=16, lr=1e-2,
                              num_train_timesteps=50, t_star=5).ddpm()
    unet, report = ddpm.load_or_train(aux, config, progress=False)
    again, _ = ddpm.load_or_train(aux, config, progress=False)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in unet.state_dict().items())
    with torch.random.fork_rng(devices=[]):   # the init train_entry starts from
        torch.manual_seed(config.seed)
        untrained = ddpm.build_unet(config, 3, (8, 8))
    scheduler = ddpm.make_scheduler(config.num_train_timesteps)
    x0 = ddpm.to_model(aux.images, "cpu")
    before = ddpm.denoising_report(untrained, scheduler, x0, seed=0)
    after = ddpm.denoising_report(unet.cpu(), scheduler, x0, seed=0)
    assert all(a["eps_mse"] < 0.75 * b["eps_mse"] for a, b in zip(after, before))   # measured: 0.23 .. 0.52
    assert report["loss_curve"][-1] < report["loss_curve"][0] and len(report["loss_curve"]) == 20


def test_bad_input():
    published = random_set(3, 1, 28)
    attack = make_attack("purify")
    with pytest.raises(LearnlockError, match="same channels and size"):
        attack.transform(published, AttackContext(aux=random_set(10, 3, 28), progress=False))
    with pytest.raises(LearnlockError, match="same channels and size"):
        attack.transform(published, AttackContext(aux=random_set(10, 1, 32), progress=False))
    with pytest.raises(LearnlockError, match="auxiliary"):
        attack.check_context(AttackContext())
    with pytest.raises(LearnlockError, match="auxiliary"):
        attack.transform(published, AttackContext(progress=False))
    for name in ATTACKS:
        for t_star in (0, 1000, -5):
            with pytest.raises(LearnlockError, match=r"t_star .* \[1, 999\]"):
                get_attack(name)(t_star=t_star)
        with pytest.raises(LearnlockError, match="t_star"):
            get_attack(name)(num_train_timesteps=100, t_star=100)
    bad = [dict(channels=()), dict(channels=(8, 0)), dict(train_steps=0), dict(lr=0.0), dict(rounds=0),
           dict(batch_size=0), dict(num_train_timesteps=10), dict(guidance_pixel=-1.0),
           dict(t_switch=101), dict(encoder="nope"), dict(encoder_resolution=8), dict(seed=-1),
           dict(train_steps=2.5)]
    for kw in bad:
        with pytest.raises(LearnlockError):
            get_attack("purify")(**kw)
    with pytest.raises(LearnlockError, match="unknown setting"):
        get_attack("purify-diffpure")(guidance_pixel=0.1)   # DiffPure has no guidance
