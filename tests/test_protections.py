import dataclasses
import json
import math
import sys

import pytest
import torch

from conftest import CONTEXT, learnable_dataset, make_protection as make
from learnlock.data import ImageDataset, load_dataset
from learnlock.data.published import read_manifest
from learnlock.errors import LearnlockError
from learnlock.protections import (
    Protection, ProtectionContext, ProtectionSettings, create_protection, get_protection, list_protections,
    project_quantize,
)

RHOS = [8 / 255, 0.04, 16 / 255]

# Methods whose noise does not depend on the seed (it only picks the protected items).
SEED_FREE = {"ops"}


def one_change_per_class(x_q, x, y):
    """Items of a class carry the same change, and two classes different ones."""
    delta = x_q.int() - x.int()
    for c in y.unique().tolist():
        d = delta[y == c]
        assert (d == d[0]).all(), f"items of class {c} carry different patterns"
    assert not torch.equal(delta[y == 0][0], delta[y == 1][0])


def one_pixel_colour_per_class(x_q, x, y):
    """OPS: every item of a class has the same pixel set to the same colour."""
    for c in y.unique().tolist():
        d = x_q[y == c]
        pos = (d != x[y == c]).any(1)
        assert (pos == pos[0]).all() and pos[0].sum() <= 1
        assert (d[:, :, pos[0]] == d[0][:, pos[0]]).all()


# Methods with one pattern per class: those with a `classwise` setting (switched on), and OPS (by
# design); how each one's pattern is checked (default: one additive change per class).
CLASSWISE = {**{name: {"classwise": True} for name in list_protections()
                if "classwise" in {f.name for f in dataclasses.fields(get_protection(name).Settings)}},
             "ops": {}}
PATTERN = {"ops": one_pixel_colour_per_class}


@pytest.fixture(scope="module")
def data():
    return learnable_dataset(n_per_class=6, classes=3, size=8)


def max_change(a, b):
    return (a.int() - b.int()).abs().max().item()


def assert_in_ball(prot, x_q, x):
    """The method's own norm bound, per item, after 8-bit rounding."""
    d = x_q.double() / 255 - x.double() / 255
    if prot.norm == "linf":
        assert d.abs().max().item() <= prot.settings.rho + 1e-12
        assert max_change(x_q, x) <= math.floor(255 * prot.settings.rho + 1e-9)
    elif prot.norm == "l2":
        radius = prot.settings.rho * math.sqrt(math.prod(x.shape[1:]))
        assert d.flatten(1).norm(dim=1).max().item() <= radius + 1e-12
    elif prot.norm == "l0":
        changed = (x_q != x).any(1).flatten(1).sum(1)  # pixel positions changed per item
        assert changed.max().item() <= prot.settings.pixels
    else:
        raise AssertionError(f"unknown norm {prot.norm}")


def test_registry():
    assert {"random", "em", "tap", "rem", "lsp", "ar", "ops", "pue", "uge"} <= set(list_protections())
    with pytest.raises(LearnlockError, match="unknown protection 'nope'.*random"):
        get_protection("nope")
    for name in list_protections():
        cls = get_protection(name)
        assert issubclass(cls, Protection) and cls.name == name
        assert issubclass(cls.Settings, ProtectionSettings)
        assert cls.norm in ("linf", "l2", "l0")
        assert cls.__doc__ and sys.modules[cls.__module__].__doc__  # paper, norm, defaults, example
        valid = {f.name for f in dataclasses.fields(cls.Settings)}
        assert all(set(p) <= valid for p in cls.presets.values())
        assert cls.default_preset is None or cls.default_preset in cls.presets
        # its own smoke preset (not inherited): the tiny settings every test here and bench/gpu_smoke.py run
        assert "smoke" in vars(cls).get("presets", {}), f"{name} declares no smoke preset"


@pytest.mark.parametrize("name", list_protections())
def test_one_constructor_shape(name):
    """cls(context, settings=None, preset=None, **settings) for every method; a method with a key
    refuses a context without one."""
    cls = get_protection(name)
    prot = make(name)
    assert prot.context is CONTEXT and prot.progress is False and prot.recipe is CONTEXT.recipe
    assert cls(CONTEXT, prot.settings).settings == prot.settings
    if cls.needs_key:
        with pytest.raises(LearnlockError, match="needs at least one authorized network"):
            cls(ProtectionContext(), preset="smoke")
    else:
        assert cls(ProtectionContext()).issued_keys() == [] and prot.authorized_info() is None
    with pytest.raises(LearnlockError, match="ProtectionContext"):
        cls(CONTEXT.authorized[0])


@pytest.mark.parametrize("name", list_protections())
@pytest.mark.parametrize("rho", RHOS)
def test_norm_ball_uint8_order(name, rho, data):
    prot = make(name, rho=rho, seed=0)
    x_q = prot.apply(data)
    assert x_q.dtype == torch.uint8 and x_q.shape == data.images.shape  # pixels in [0, 1] by type
    assert_in_ball(prot, x_q, data.images)
    assert (x_q != data.images).any(), f"{name} changed nothing"
    assert torch.equal(prot.protected_index, torch.arange(len(data)))


@pytest.mark.parametrize("name", list_protections())
def test_seeds(name, data):
    a = make(name, seed=0).apply(data)
    b = make(name, seed=0).apply(data)
    assert torch.equal(a, b)
    assert torch.equal(a, make(name, seed=1).apply(data)) == (name in SEED_FREE)


@pytest.mark.parametrize("name", list_protections())
def test_fraction(name, data):
    prot = make(name, fraction=0.5, seed=2)
    x_q = prot.apply(data)
    idx = prot.protected_index
    assert len(idx) == len(data) // 2 and torch.equal(idx, idx.unique())
    rest = torch.ones(len(data), dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(x_q[rest], data.images[rest])
    assert ((x_q[idx] != data.images[idx]).flatten(1).any(1)).all(), "a listed item was left clean"
    assert_in_ball(prot, x_q, data.images)


@pytest.mark.parametrize("name", sorted(CLASSWISE))
def test_classwise_one_pattern_per_class(name):
    # mid-grey images: no pixel saturates, so the quantised change is the pattern itself
    classes, n = 3, 4
    x = torch.full((classes * n, 3, 8, 8), 128, dtype=torch.uint8)
    x += torch.randint(0, 20, x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = torch.arange(classes).repeat(n)
    grey = ImageDataset(x, y, ("a", "b", "c"), tuple(str(i) for i in range(len(y))), source="grey")
    x_q = make(name, rho=16 / 255, seed=0, **CLASSWISE[name]).apply(grey)
    PATTERN.get(name, one_change_per_class)(x_q, x, y)


@pytest.mark.parametrize("name", list_protections())
def test_protect_publishes(name, data, tmp_path):
    prot = make(name, fraction=0.5, seed=1)
    out = prot.protect(data, tmp_path / "pub")
    back = load_dataset(f"published:{out}")
    assert torch.equal(back.images, make(name, fraction=0.5, seed=1).apply(data))
    assert torch.equal(back.labels, data.labels) and back.ids == data.ids
    m = read_manifest(out)
    assert m["method"] == name and m["rho"] == prot.settings.rho and m["seed"] == 1
    assert m["settings"] == json.loads(json.dumps(prot.manifest_settings()))
    assert m["settings"]["fraction"] == 0.5 and m["extra"]["norm"]["norm"] == prot.norm
    # where it ran is no part of what it published: data protected on a GPU train on a CPU
    assert "device" not in json.dumps(m["settings"]) and "device" not in json.dumps(m["authorized"])
    flags = [it["protected"] for it in m["items"]]
    assert [i for i, f in enumerate(flags) if f] == prot.protected_index.tolist()


def test_protect_checks_out_dir_before_work(data, tmp_path):
    class Boom(Protection):
        name = "boom"

        def perturb(self, data, workdir=None):
            raise AssertionError("perturb ran before the out-dir check")

    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "x").write_text("x")
    with pytest.raises(LearnlockError, match="exists; choose another `out`"):
        Boom().protect(data, tmp_path / "pub")


def test_nan_and_bad_shape_named(data):
    class Bad(Protection):
        name = "bad"
        out = None

        def perturb(self, data, workdir=None):
            return self.out(data)

    Bad.out = staticmethod(lambda d: torch.full(d.images.shape, float("nan")))
    with pytest.raises(LearnlockError, match="'bad' produced NaN"):
        Bad().apply(data)
    Bad.out = staticmethod(lambda d: d.float_images()[:, :1])
    with pytest.raises(LearnlockError, match="'bad'.*shape"):
        Bad().apply(data)


def test_settings_validation():
    with pytest.raises(LearnlockError, match=r"rho is an L-inf radius in \[0,1\] pixel units; did you mean 12/255"):
        ProtectionSettings(rho=12)
    with pytest.raises(LearnlockError, match="12/255"):
        create_protection("random", rho=12)
    for bad in (0, -0.1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(LearnlockError, match="rho"):
            ProtectionSettings(rho=bad)
    for bad in (0, 1.5, -1):
        with pytest.raises(LearnlockError, match="fraction"):
            ProtectionSettings(fraction=bad)
    with pytest.raises(LearnlockError, match="unknown setting.*valid settings: rho, seed, fraction, classwise"):
        create_protection("random", epsilon=0.1)
    with pytest.raises(LearnlockError, match="classwise must be bool"):
        create_protection("random", classwise="yes")
    with pytest.raises(LearnlockError, match="unknown random preset 'paper'; choose one of: smoke"):
        create_protection("random", preset="paper")

    class Bare(Protection):
        name = "bare"

        def perturb(self, data, workdir=None):
            return data.float_images()

    with pytest.raises(LearnlockError, match="unknown bare preset 'paper'.*no presets"):
        Bare(preset="paper")
    assert ProtectionSettings().rho == 8 / 255 and ProtectionSettings(rho=1).rho == 1


def test_project_quantize_property():
    g = torch.Generator().manual_seed(0)
    for rho in [1 / 255, 8 / 255, 0.04, 16 / 255, 0.0431, 0.5, 1.0]:
        x = torch.randint(0, 256, (64, 3, 5, 5), generator=g, dtype=torch.uint8)
        x[:8] = 0
        x[8:16] = 255
        scale = torch.tensor([0.5, 2, 50, 1e6]).repeat_interleave(16).view(64, 1, 1, 1)
        x_u = x.float() / 255 + (torch.rand(x.shape, generator=g) * 2 - 1) * rho * scale
        x_u[0, 0, 0, 0], x_u[9, 0, 0, 0] = float("inf"), float("-inf")
        x_q = project_quantize(x, x_u, rho)
        assert x_q.dtype == torch.uint8 and x_q.shape == x.shape
        delta = x_q.double() / 255 - x.double() / 255
        assert delta.abs().max().item() <= rho + 1e-12
        assert max_change(x_q, x) <= math.floor(255 * rho + 1e-9)
        # inside the ball and the box, quantisation is plain rounding
        inside = ((x_u - x.float() / 255).abs() <= (math.floor(255 * rho + 1e-9) - 0.5) / 255) & \
            (x_u >= 0) & (x_u <= 1)
        assert torch.equal(x_q[inside].long(), torch.round(x_u[inside] * 255).long())
    x = torch.randint(0, 256, (4, 1, 3, 3), generator=g, dtype=torch.uint8)
    assert torch.equal(project_quantize(x, x.float() / 255, 8 / 255), x)
    with pytest.raises(LearnlockError, match="NaN"):
        project_quantize(x, torch.full(x.shape, float("nan")), 8 / 255)


def test_random_noise_patches_are_constant_blocks():
    data = learnable_dataset(n_per_class=3, size=16)
    prot = create_protection("random", rho=8 / 255, classwise=True, patch=4, seed=0)
    delta = prot.perturb(data) - data.float_images()
    blocks = delta.unfold(2, 4, 4).unfold(3, 4, 4)  # N x C x 4 x 4 x (4 x 4 pixels)
    assert torch.allclose(blocks.amax((-1, -2)), blocks.amin((-1, -2)), atol=1e-6)  # float rounding of x + d - x
    same = data.labels == data.labels[0]
    assert torch.allclose(delta[same], delta[same][:1].expand_as(delta[same]), atol=1e-6)
    with pytest.raises(LearnlockError, match="patch"):
        create_protection("random", patch=0)


def test_ar_is_the_papers_noise_free_process():
    """AR (Sandoval-Segura et al. 2022): each class's coefficients sum to 1 per channel with the
    pixel's own entry 0; its filter (b, -1) answers exactly 0 on the class's patterns (no innovation
    noise) and clearly on other classes' patterns (the greedy search's distinctness)."""
    from learnlock.protections.ar import ar_filter, ar_generate, ar_processes, response

    g = torch.Generator().manual_seed(0)
    coef = ar_processes(3, 3, (16, 16), 4, 50.0, 2.0, g)
    assert coef.shape == (3, 3, 3, 3) and (coef[:, :, -1, -1] == 0).all()
    assert torch.allclose(coef.sum((-1, -2)), torch.ones(3, 3), atol=1e-5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    p = ar_generate(coef[labels], 16, 16, 4, g).float()
    p = p / p.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for k in range(3):
        raw = torch.nn.functional.conv2d(p, ar_filter(coef[k]))
        own = raw[labels == k].abs().max()
        assert own < 1e-4, f"class {k}'s filter answers {own} on its own patterns"
        assert response(ar_filter(coef[k]), p[labels != k]).min() > 0.1
