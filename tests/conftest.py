import numpy as np
import pytest
import torch
from PIL import Image

from learnlock.attacks import get_attack
from learnlock.data import ImageDataset
from learnlock.device import set_device, using
from learnlock.models import NetSpec
from learnlock.protections import ProtectionContext, get_protection
from learnlock.recipe import Recipe

torch.set_num_threads(1)  # tiny tensors: threads only add sync overhead
set_device("cpu")  # the suite's exact-bytes checks are CPU facts; `device` below runs tests on each device

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs a test on the CPU and, where there is one, on a CUDA GPU (the chosen run device)."""
    with using(request.param) as dev:
        yield dev


def write_folder(root, per_class=4, classes=("ant", "bee", "cat"), size=(8, 6), mode="RGB", seed=0):
    """Random PNGs in root/<class>/NNN.png; returns {relative path: (array HxWxC, label)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ch = 3 if mode == "RGB" else 1
            arr = rng.integers(0, 256, (size[1], size[0], ch), dtype=np.uint8)
            Image.fromarray(arr if ch == 3 else arr[:, :, 0], mode).save(root / name / f"{i:03d}.png")
            truth[f"{name}/{i:03d}.png"] = (arr, c)
    return truth


def learnable_dataset(n_per_class=40, classes=4, size=16, channels=3, seed=0) -> ImageDataset:
    """Noise images whose class is the colour of a square at a random place: easy to learn,
    and invariant to crops and flips."""
    palette = torch.tensor([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30],
                            [30, 230, 230], [230, 30, 230]], dtype=torch.uint8)[:classes, :channels]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 90, (n_per_class * classes, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    s = size // 2
    for i, c in enumerate(y.tolist()):
        r, q = torch.randint(0, size - s + 1, (2,), generator=g).tolist()
        x[i, :, r:r + s, q:q + s] = palette[c][:, None, None]
    perm = torch.randperm(len(y), generator=g)
    return ImageDataset(x[perm].contiguous(), y[perm].contiguous(), tuple(f"c{i}" for i in range(classes)),
                        tuple(str(i) for i in range(len(y))), source="learnable")


@pytest.fixture
def learnable():
    return learnable_dataset


def write_npz(path, n_per_class=12, size=16, seed=0, classes=None):
    """A 4-class `learnable_dataset` as an npz source (x: N x H x W x C uint8, y, classes); `classes`
    renames the classes."""
    ds = learnable_dataset(n_per_class=n_per_class, classes=4, size=size, seed=seed)
    np.savez(path, x=ds.images.permute(0, 2, 3, 1).numpy(), y=ds.labels.numpy(),
             classes=np.array(list(classes or ds.classes)))


# The authorized user's recipe in the tests' protection contexts: one epoch of small batches.
TINY = Recipe(name="tiny", epochs=1, batch_size=8)
# One epoch with flips: for tests of what runs a cell (caching, workers, executors), not of what it learns.
ONE = Recipe(name="one", epochs=1, batch_size=16, lr=0.05, augment="flip")
# Enough training for a cnn to learn `learnable_dataset` (tests that compare accuracies).
LEARN = Recipe(name="tiny", epochs=6, batch_size=32, lr=0.05, augment="flip")
# One context for every method: an authorized network for 3-class RGB data, trained with TINY by
# the methods that read it.
CONTEXT = ProtectionContext([NetSpec.create("cnn", 3, 3, seed=1, width=8)], TINY, progress=False)


def make_protection(name, context=CONTEXT, **settings):
    """The protection `name` at its own smoke preset (tiny settings), `settings` on top."""
    return get_protection(name)(context, preset="smoke", **settings)


def make_attack(name, **settings):
    """The attack `name` at its own smoke preset (tiny settings), `settings` on top."""
    cls = get_attack(name)
    return cls(**{**cls.presets["smoke"], **settings})


# Clean test data name no key family: an attacker who knows the keyed scheme assumes one
# (`make_attack(name, **ASSUMED.get(name, {}))`).
ASSUMED = {"key-estimate": {"family": "spectral"}, "key-search": {"family": "colour"},
           "key-search-gradient": {"family": "colour"},
           "leaked-pairs": {"family": "colour"}}
