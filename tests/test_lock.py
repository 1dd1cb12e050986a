"""Learnability Lock: unlocking restores the images, the key file, wrong keys, determinism, resume,
the CLI path (protect -> train / table1 / audit) and the lock-inverse attack."""

import json
import math
import struct

import pytest
import torch

from conftest import CONTEXT as CTX, TINY as RECIPE, learnable_dataset, write_npz
from learnlock import cli
from learnlock.attacks import AttackContext, create_attack
from learnlock.data import ImageDataset
from learnlock.data.published import read_manifest
from learnlock.errors import LearnlockError
from learnlock.keys import check_key_matches, load_key
from learnlock.keys.lock import VARIANTS, LockKey, residual_lipschitz
from learnlock.models import NetSpec
from learnlock.protections.base import ProtectionContext, quantize
from learnlock.protections.lock import LearnabilityLock
from learnlock.protections.resumable import Checkpoint

AUTH = CTX.authorized[0]
K = 8  # grey levels of the default rho = 8/255


def grey(n=6, classes=3, size=8, seed=0):
    """Pixels in [20, 235]: at rho 8/255 no locked value leaves [0, 1], so nothing is clipped."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(20, 236, (n * classes, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(classes).repeat(n)
    return ImageDataset(x, y, tuple(f"c{i}" for i in range(classes)), tuple(str(i) for i in range(len(y))), "grey")


def locked(variant, data, **settings):
    prot = LearnabilityLock(CTX, preset="smoke", variant=variant, **settings)
    x_q = prot.apply(data)
    return prot, x_q, prot.issued_keys()[0]


def max_change(a, b):
    return (a.int() - b.int()).abs().max().item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_unlock_restores_within_one_level(variant):
    data = grey()
    prot, x_q, key = locked(variant, data)
    assert isinstance(key, LockKey) and key.variant == variant and key.eps == K / 255
    assert 1 <= max_change(x_q, data.images) <= K  # locked, and inside the rho-ball
    lock_float = key.lock(data.float_images(), data.labels)
    assert lock_float.min() >= 0 and lock_float.max() <= 1  # the premise: nothing clipped
    back = key.prepare(data.with_images(x_q))
    assert back.ids == data.ids and torch.equal(back.labels, data.labels)
    assert max_change(back.images, data.images) <= 1
    # a different class's transform does not unlock: the labels select the transform
    wrong = key.prepare(data.with_images(x_q).subset(torch.arange(len(data))))
    assert torch.equal(wrong.images, back.images)
    shuffled = ImageDataset(x_q, (data.labels + 1) % 3, data.classes, data.ids, "x")
    assert max_change(key.prepare(shuffled).images, data.images) > 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_clipped_pixels(variant):
    """Where the lock pushed a pixel past 0 or 1 the clip removed up to eps: the affine unlock errs by
    at most (K + 0.5) / (1 - eps/2) + 0.5 levels there and stays within one level elsewhere. The
    residual inverse mixes neighbouring pixels, so there is no per-pixel bound; it stays within a
    couple of eps."""
    data = learnable_dataset(n_per_class=6, classes=3, size=8)  # pixels at 30 and 230, noise in 0..89
    _, x_q, key = locked(variant, data)
    lock_float = key.lock(data.float_images(), data.labels)
    clipped = (lock_float < 0) | (lock_float > 1)
    assert clipped.any()
    err = (key.prepare(data.with_images(x_q)).images.int() - data.images.int()).abs()
    if variant == "affine":
        assert err[~clipped].max() <= 1
        assert err[clipped].max() <= math.floor((K + 0.5) / (1 - key.eps / 2) + 0.5)
    else:
        assert err.max() <= 2 * K and err.float().mean() < 1


def test_same_seed_same_bytes(tmp_path):
    data = grey()
    for variant in VARIANTS:
        a, xa, ka = locked(variant, data, seed=3)
        b, xb, kb = locked(variant, data, seed=3)
        assert torch.equal(xa, xb) and ka.fingerprint == kb.fingerprint
        assert ka.save(tmp_path / f"{variant}a").read_bytes() == kb.save(tmp_path / f"{variant}b").read_bytes()
        _, xc, kc = locked(variant, data, seed=4)
        assert not torch.equal(xa, xc) and kc.fingerprint != ka.fingerprint


@pytest.mark.parametrize("variant", VARIANTS)
def test_key_file_round_trip_and_damage(tmp_path, variant):
    data = grey()
    _, x_q, key = locked(variant, data)
    path = key.save(tmp_path / "key.safetensors")
    back = load_key(path)
    assert isinstance(back, LockKey) and back.fingerprint == key.fingerprint and back.variant == variant
    assert (back.arch, back.num_classes, back.in_channels, back.kwargs) == ("cnn", 3, 3, {"width": 8})
    assert back.net.fingerprint == AUTH.fingerprint
    assert all(torch.equal(v, AUTH.state[k]) for k, v in back.build().state_dict().items())
    assert back.save(tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    pub = data.with_images(x_q)
    assert torch.equal(back.prepare(pub).images, key.prepare(pub).images)
    assert LockKey.load(path, expected_fingerprint=key.fingerprint).fingerprint == key.fingerprint
    with pytest.raises(LearnlockError, match="not the lock key you expected"):
        LockKey.load(path, expected_fingerprint="0" * 64)
    with pytest.raises(LearnlockError, match="already exists"):
        key.save(path)

    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    for name in ("lock/" + sorted(key.tensors)[0], "net/" + sorted(AUTH.state)[0]):
        bad = bytearray(raw)
        bad[start + header[name]["data_offsets"][0]] ^= 1  # lowest byte of the first float: a tiny change
        (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
        with pytest.raises(LearnlockError, match="modified or corrupted"):
            load_key(tmp_path / "bad.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(LearnlockError, match="not a readable safetensors"):
        load_key(tmp_path / "cut.safetensors")
    with pytest.raises(LearnlockError, match="does not exist"):
        load_key(tmp_path / "missing.safetensors")
    AUTH.save(tmp_path / "net.safetensors")
    assert isinstance(load_key(tmp_path / "net.safetensors"), NetSpec)  # the other format, by its metadata
    with pytest.raises(LearnlockError, match="network key \\(NetSpec\\), not a lock key"):
        LockKey.load(tmp_path / "net.safetensors")
    with pytest.raises(LearnlockError, match="not a learnlock NetSpec file"):
        NetSpec.load(path)


def test_key_refuses_non_invertible_transforms():
    shape = (3, 3, 4, 4)
    eps = K / 255
    ok = {"W": torch.ones(shape), "B": torch.zeros(shape)}
    LockKey(AUTH, "affine", eps, ok)
    with pytest.raises(LearnlockError, match="outside its box"):
        LockKey(AUTH, "affine", eps, {**ok, "W": torch.full(shape, 1 + eps)})
    with pytest.raises(LearnlockError, match="tensors B, W"):
        LockKey(AUTH, "affine", eps, {"W": ok["W"]})
    _, _, key = locked("residual", grey())
    big = {k: v * 2 for k, v in key.tensors.items()}
    with pytest.raises(LearnlockError, match="spectral norm"):
        LockKey(AUTH, "residual", eps, big)
    with pytest.raises(LearnlockError, match="9 \\* eps >= 1"):
        LockKey(AUTH, "residual", 30 / 255, key.tensors)
    assert residual_lipschitz(eps) < 0.3


def test_settings_and_inputs_validated():
    for bad, match in [(dict(variant="spline"), "variant"), (dict(variant="residual", rho=32 / 255), "1/9"),
                       (dict(rho=0.5 / 255), "below one grey level"), (dict(surrogate="alexnet"), "surrogate")]:
        with pytest.raises(LearnlockError, match=match):
            LearnabilityLock(CTX, **bad)
    with pytest.raises(LearnlockError, match="NetSpec"):
        LearnabilityLock(ProtectionContext([], RECIPE))
    with pytest.raises(LearnlockError, match="classes"):
        LearnabilityLock(ProtectionContext(NetSpec.create("cnn", 4, 3, seed=0, width=8), RECIPE), preset="smoke").apply(grey())
    prot = LearnabilityLock(CTX, preset="smoke")
    with pytest.raises(LearnlockError, match="only after"):
        prot.issued_keys()  # the key exists once the lock is trained
    prot.apply(grey())
    assert isinstance(prot.issued_keys()[0], LockKey)
    assert LearnabilityLock(CTX, rho=0.04).eps == 10 / 255  # whole grey levels


def test_wrong_key_refused(tmp_path):
    data = grey()
    prot = LearnabilityLock(CTX, preset="smoke")
    out = prot.protect(data, tmp_path / "pub")
    manifest = read_manifest(out)
    key = prot.issued_keys()[0]
    assert manifest["authorized"]["unlock"] == "lock" and check_key_matches(key, manifest) == 0
    assert manifest["authorized"]["networks"][0]["fingerprint"] == key.fingerprint
    assert manifest["extra"]["eps"] == K / 255 and len(manifest["extra"]["log"]) >= 1
    other = LearnabilityLock(CTX, seed=1, preset="smoke")
    other.apply(data)
    for wrong in (other.issued_keys()[0], AUTH):  # another lock; the bare network without its transform
        with pytest.raises(LearnlockError, match="wrong key"):
            check_key_matches(wrong, manifest)


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    data = grey()
    settings = dict(preset="smoke", max_rounds=3, stop_error=0.0, variant="residual")
    full = LearnabilityLock(CTX, **settings)
    want = full.perturb(data, tmp_path / "a")
    real = Checkpoint.save

    def crash_after_one(self, *a, **k):
        real(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        LearnabilityLock(CTX, **settings).perturb(data, tmp_path / "b")
    monkeypatch.setattr(Checkpoint, "save", real)
    resumed = LearnabilityLock(CTX, **settings)
    got = resumed.perturb(data, tmp_path / "b")
    assert torch.equal(got, want) and resumed.log == full.log
    with pytest.raises(LearnlockError, match="other settings or data"):
        LearnabilityLock(CTX, **{**settings, "lr": 0.01}).perturb(data, tmp_path / "b")


def test_lock_inverse_undoes_a_known_affine_lock():
    data = grey(n=40, size=6)
    g = torch.Generator().manual_seed(0)
    eps = K / 255
    box = lambda: (torch.rand((3, 3, 6, 6), generator=g) * 2 - 1) * eps / 2  # noqa: E731
    key = LockKey(AUTH, "affine", eps, {"W": 1 + box(), "B": box()})
    pub = data.with_images(quantize(key.lock(data.float_images(), data.labels).clamp(0, 1)))
    # with a reference of the same class statistics (here: the clean items themselves) the map is undone
    out = create_attack("lock-inverse").transform(pub, AttackContext(aux=data))
    err = (out.images.int() - data.images.int()).abs()
    assert err.max() <= 2 and err.float().mean() < 0.5
    assert max_change(pub.images, data.images) >= K - 2  # it did have something to undo
    # without aux every class is moved onto the pooled statistics of the published images
    pooled = create_attack("lock-inverse").transform(pub, AttackContext())
    pool_mean = pub.float_images().mean(0)
    for c in range(3):
        assert (pooled.float_images()[pooled.labels == c].mean(0) - pool_mean).abs().max() <= 1.5 / 255
    with pytest.raises(LearnlockError, match="needs an auxiliary"):
        create_attack("lock-inverse", reference="aux").transform(pub, AttackContext())
    with pytest.raises(LearnlockError, match="at least 2 per class"):
        create_attack("lock-inverse").transform(pub, AttackContext(aux=data.subset(torch.arange(3))))
    with pytest.raises(LearnlockError, match="reference"):
        create_attack("lock-inverse", reference="median")


def test_cli_protect_train_table1_audit(tmp_path, capsys):

    write_npz(tmp_path / "d.npz")
    write_npz(tmp_path / "t.npz", seed=1)
    spec, pub = f"npz:{tmp_path / 'd.npz'}", tmp_path / "pub"
    test = f"npz:{tmp_path / 't.npz'}"
    common = ["--epochs", "1", "--batch-size", "16", "--no-progress"]
    rc = cli.main(["protect", "--method", "lock", "--data", spec, "--authorized", "cnn", "--key-seed", "1",
                   "--set", "max_rounds=2", "--set", "train_steps=2", "--set", "batch_size=16", "--out", str(pub),
                   "--authorized-epochs", "1", *common[2:]])
    assert rc == 0, capsys.readouterr().err
    key_path = tmp_path / "pub.key.safetensors"
    key = load_key(key_path)
    assert isinstance(key, LockKey) and key.net.fingerprint == NetSpec.create("cnn", 4, 3, seed=1).fingerprint
    assert read_manifest(pub)["authorized"]["networks"][0]["fingerprint"] == key.fingerprint
    assert f"fingerprint {key.fingerprint[:16]}" in capsys.readouterr().err
    rc = cli.main(["train", "--authorized", str(key_path), "--data", str(pub), "--test", test,
                   "--out", str(tmp_path / "trained.safetensors"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out and (tmp_path / "trained.safetensors").exists()
    NetSpec.create("cnn", 4, 3, seed=1).save(tmp_path / "bare.safetensors")  # the network without the transform
    assert cli.main(["train", "--authorized", str(tmp_path / "bare.safetensors"), "--data", str(pub),
                     "--out", str(tmp_path / "w.safetensors")]) == 2
    assert "wrong key" in capsys.readouterr().err
    rc = cli.main(["table1", "--published", str(pub), "--authorized", str(key_path), "--test", test,
                   "--hackers", "cnn:1", "--distill", "", *common])
    assert rc == 0, capsys.readouterr().err
    assert "| lock (pub)" in capsys.readouterr().out
    rc = cli.main(["audit", str(pub), "--authorized", str(key_path), "--test", test,
                   "--attacks", "retrain,lock-inverse", "--nets", "cnn", "--out", str(tmp_path / "audit"), *common])
    assert rc == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "| lock-inverse" in table and "| authorized (cnn" in table
