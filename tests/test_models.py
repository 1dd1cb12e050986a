"""Guarantees of learnlock.models: every registered net trains on 28px and 32px inputs, seeds
fix the weights without touching the global RNG, and NetSpec files are byte-stable and
tamper-evident."""

from __future__ import annotations

import inspect
import json
import struct

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from learnlock.errors import LearnlockError
from learnlock.models import MODELS, NetSpec, create_model, list_models
from learnlock.models.netspec import _fingerprint

SHAPES = [(1, 28), (3, 32)]  # (in_channels, H = W): MNIST-like and CIFAR-like


def size_kwargs(name: str, size: int) -> dict:
    """Constructor arguments that depend on the image size (a keyed net's spectral key layer)."""
    return {"image_size": size} if "image_size" in inspect.signature(MODELS.get(name)).parameters else {}


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        and sa[k].numpy().tobytes() == sb[k].numpy().tobytes() for k in sa
    )


def _split(data: bytes) -> tuple[dict, bytes]:
    """(safetensors header as a dict, tensor data region) of a file's bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _small_spec(seed: int = 0) -> NetSpec:
    return NetSpec.create("cnn", num_classes=10, in_channels=3, seed=seed, width=8)


# -- every registered architecture -----------------------------------------------------------

def test_registry_has_the_documented_models():
    assert set(list_models()) >= {
        "cnn", "lenet", "resnet18", "resnet8", "mobilenetv2", "shufflenetv2", "vgg11"
    }


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels,size", SHAPES)
def test_forward_shape_and_one_sgd_step(name, in_channels, size):
    g = torch.Generator().manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=in_channels, seed=0, **size_kwargs(name, size))

    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_channels, size, size, generator=g))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()

    model.train()
    x = torch.rand(4, in_channels, size, size, generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), k
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged, f"{name}: SGD step left {unchanged} unchanged"


@pytest.mark.parametrize("name", list_models())
def test_seed_fixes_weights(name):
    a = create_model(name, 10, 3, seed=7)
    b = create_model(name, 10, 3, seed=7)
    c = create_model(name, 10, 3, seed=8)
    assert _same_state(a, b)
    assert not _same_state(a, c)


def test_seeded_creation_leaves_global_rng_alone():
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = create_model("cnn", 10, 3, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.manual_seed(999)  # a different global state must not change seeded weights
    assert _same_state(a, create_model("cnn", 10, 3, seed=5))
    # Sanity check that the test can see RNG use: seed=None draws from the global RNG.
    rng = torch.get_rng_state()
    create_model("cnn", 10, 3)
    assert not torch.equal(torch.get_rng_state(), rng)


# -- bad arguments ---------------------------------------------------------------------------

def test_unknown_model_lists_choices():
    with pytest.raises(LearnlockError) as e:
        create_model("resnet1000", 10)
    for name in list_models():
        assert name in str(e.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"in_channels": 2}, "in_channels"),
    ({"num_classes": 1}, "num_classes"),
    ({"seed": 1.5}, "seed"),
    ({"depth": 3}, r"unknown setting\(s\) depth; valid settings: width"),
    ({"width": 0}, "width"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"num_classes": 10, **kwargs}
    with pytest.raises(LearnlockError, match=match):
        create_model("cnn", **args)


# -- NetSpec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_netspec_roundtrip_is_byte_identical(name, tmp_path):
    model = create_model(name, 10, 3, seed=3)
    spec = NetSpec.from_model(name, model, 10, 3, {})
    assert spec.fingerprint == NetSpec.create(name, 10, 3, seed=3).fingerprint

    spec.save(tmp_path / "a.safetensors")
    loaded = NetSpec.load(tmp_path / "a.safetensors", expected_fingerprint=spec.fingerprint)
    loaded.save(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert loaded.fingerprint == spec.fingerprint

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.build().eval()(x), model.eval()(x))


def test_netspec_save_is_deterministic_and_readable_by_safetensors(tmp_path):
    spec = NetSpec.create("resnet8", 10, 1, seed=0, width=8)
    files = []
    for i in range(5):  # safetensors' own metadata order varies between calls
        spec.save(tmp_path / f"{i}.safetensors")
        files.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert all(f == files[0] for f in files)
    header, _ = _split(files[0])
    meta = header["__metadata__"]
    assert meta["format"] == "learnlock.netspec/1"
    assert meta["fingerprint"] == spec.fingerprint
    assert json.loads(meta["kwargs"]) == {"width": 8}
    plain = safetensors.torch.load(files[0])  # still an ordinary safetensors file
    assert all(torch.equal(plain[k], v) for k, v in spec.state.items())


def test_fingerprint_covers_arguments_and_every_tensor():
    spec = _small_spec()
    assert _small_spec().fingerprint == spec.fingerprint
    assert _small_spec(seed=1).fingerprint != spec.fingerprint
    key = "1.num_batches_tracked"  # int64 buffer: a non-float dtype is hashed too
    state = dict(spec.state, **{key: spec.state[key] + 1})
    assert _fingerprint("cnn", 10, 3, {"width": 8}, state) != spec.fingerprint
    assert _fingerprint("cnn", 11, 3, {"width": 8}, spec.state) != spec.fingerprint


def test_flipped_data_byte_is_detected(tmp_path):
    path = tmp_path / "net.safetensors"
    _small_spec().save(path)
    data = bytearray(path.read_bytes())
    header_end = len(data) - len(_split(bytes(data))[1])
    data[(header_end + len(data)) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LearnlockError, match="fingerprint.*modified or corrupted"):
        NetSpec.load(path)


def _rewrite(path, edit_meta=lambda m: m, edit_state=lambda s: s) -> None:
    """Re-save path's tensors and metadata after the given edits (a deliberate tamper)."""
    data = path.read_bytes()
    meta = _split(data)[0]["__metadata__"]
    state = edit_state(safetensors.torch.load(data))
    path.write_bytes(safetensors.torch.save(state, metadata=edit_meta(dict(meta))))


def test_edited_metadata_is_refused(tmp_path):
    path = tmp_path / "net.safetensors"
    _small_spec().save(path)
    _rewrite(path, lambda m: {**m, "kwargs": json.dumps({"width": 9})})
    with pytest.raises(LearnlockError, match="fingerprint"):
        NetSpec.load(path)
    _rewrite(path, lambda m: {**m, "arch": "lenet"})
    with pytest.raises(LearnlockError, match="fingerprint"):
        NetSpec.load(path)
    _rewrite(path, lambda m: {**m, "arch": "nosuchnet"})
    with pytest.raises(LearnlockError, match="unknown model 'nosuchnet'"):
        NetSpec.load(path)
    _rewrite(path, lambda m: {k: v for k, v in m.items() if k != "format"})
    with pytest.raises(LearnlockError, match="not a learnlock NetSpec file"):
        NetSpec.load(path)


def test_consistent_but_wrong_state_is_refused(tmp_path):
    # A file whose fingerprint was recomputed after dropping a tensor passes the checksum,
    # but its state no longer fits the architecture.
    path = tmp_path / "net.safetensors"
    _small_spec().save(path)
    drop = "0.weight"

    def edit_state(s):
        return {k: v for k, v in s.items() if k != drop}

    state = edit_state(_small_spec().state)
    fp = _fingerprint("cnn", 10, 3, {"width": 8}, state)
    _rewrite(path, lambda m: {**m, "fingerprint": fp}, edit_state)
    with pytest.raises(LearnlockError, match=f"lacks '{drop}'"):
        NetSpec.load(path)

    bad = dict(_small_spec().state, **{"0.weight": torch.zeros(8, 3, 5, 5)})
    with pytest.raises(LearnlockError, match="'0.weight'.*needs"):
        NetSpec("cnn", 10, 3, {"width": 8}, bad)


def test_other_network_fails_expected_fingerprint(tmp_path):
    path = tmp_path / "net.safetensors"
    authorized = _small_spec(seed=0)
    _small_spec(seed=1).save(path)  # a valid file, but not the network we meant
    with pytest.raises(LearnlockError, match="not the authorized network"):
        NetSpec.load(path, expected_fingerprint=authorized.fingerprint)


@pytest.mark.parametrize("content", [b"", b"hello, not a tensor file", bytes(range(256)) * 8])
def test_non_safetensors_file_is_refused(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(LearnlockError, match="not a readable safetensors file"):
        NetSpec.load(path)


def test_plain_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(safetensors.torch.save({"w": torch.zeros(3)}))
    with pytest.raises(LearnlockError, match="not a learnlock NetSpec file"):
        NetSpec.load(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(LearnlockError, match="does not exist"):
        NetSpec.load(tmp_path / "nope.safetensors")


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "net.safetensors"
    _small_spec(seed=0).save(path)
    first = path.read_bytes()
    with pytest.raises(LearnlockError, match="overwrite=True"):
        _small_spec(seed=1).save(path)
    assert path.read_bytes() == first
    _small_spec(seed=1).save(path, overwrite=True)
    assert NetSpec.load(path).fingerprint == _small_spec(seed=1).fingerprint
