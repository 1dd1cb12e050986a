"""Where learnlock computes: one choice (learnlock.device), and everything follows the tensors.

The `device` fixture runs a test on the CPU and on CUDA where there is one; on this project's CPU
machines the CUDA half is not collected, so the faults a GPU would show are also tested here by
what a CPU can check: no device in recipes, manifests (test_protections.py checks every method's)
or cache keys, and modules that follow their inputs (the "meta" device stands in for a second
device). Every protection and attack runs on CUDA only where there is one: on a CPU,
test_protections.py and test_attacks.py already run each of them at its smoke preset.
"""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import ASSUMED, TINY, learnable_dataset, make_attack, make_protection
from learnlock.attacks import AttackContext, list_attacks
from learnlock.data.published import read_manifest
from learnlock.device import current_device, parse, set_device, using
from learnlock.encoders.base import Encoder
from learnlock.errors import LearnlockError
from learnlock.losses import DistillationLoss
from learnlock.models import NetSpec, create_model
from learnlock.protections import ProtectionContext, list_protections
from learnlock.recipe import Recipe
from learnlock.training import evaluate, fit

FLIP = replace(TINY, augment="flip")  # augmentation runs where the batch is


@pytest.fixture
def cuda():
    """The per-method runs: on CUDA only (a CPU runs every method in test_protections.py and
    test_attacks.py already; here it would train them all a second time)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: on a CPU, test_protections.py and test_attacks.py run every method")
    with using("cuda") as dev:
        yield dev


def test_fit_runs_on_the_chosen_device(device):
    data = learnable_dataset(n_per_class=6, classes=3, size=8)
    model = fit(create_model("cnn", 3, 3, seed=0, width=8), data, FLIP, progress=False)
    assert all(p.device.type == device.type for p in model.parameters())
    assert 0 <= evaluate(model, data) <= 1


@pytest.mark.parametrize("name", list_protections())
def test_every_protection_runs_on_the_device(name, cuda, tmp_path):
    data = learnable_dataset(n_per_class=4, classes=3, size=8)
    context = ProtectionContext([NetSpec.create("cnn", 3, 3, seed=1, width=8)], FLIP, progress=False)
    prot = make_protection(name, context)
    out = prot.protect(data, tmp_path / "pub")
    manifest = read_manifest(out)
    assert "device" not in json.dumps(manifest["settings"]) and "device" not in json.dumps(manifest["authorized"])


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_runs_on_the_device(name, cuda, tmp_path):
    train = learnable_dataset(n_per_class=6, classes=3, size=16)
    teacher = create_model("cnn", 3, 3, seed=0, width=8).eval()  # on the CPU: it must follow the batch
    # every input a threat model may give: the budget rho and leaked clean originals (the published
    # images here are the originals, darker by 8 grey levels)
    originals = train.with_images((train.images.int() - 8).clamp(0, 255).to(torch.uint8))
    context = AttackContext(teacher=teacher, aux=learnable_dataset(n_per_class=14, classes=3, size=16, seed=2),
                            workdir=tmp_path, progress=False, rho=8 / 255, originals=originals)
    model = make_attack(name, **ASSUMED.get(name, {})).train(train, "cnn", 0, FLIP, context, progress=False)
    assert all(p.device.type == cuda.type for p in model.parameters())


def test_one_choice_checked_where_it_is_made():
    with pytest.raises(LearnlockError, match="device must be auto, cpu, cuda or cuda:N"):
        parse("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(LearnlockError, match="this machine has 0 CUDA"):
            set_device("cuda")
    assert current_device().type == "cpu"  # the suite's default (conftest)
    with using("cpu") as dev:
        assert dev == torch.device("cpu")
    assert "device" not in Recipe.__dataclass_fields__  # a recipe says how to train, not where


def test_legacy_manifest_recipe_with_a_device_still_loads():
    from learnlock.data.manifest import manifest_recipe

    recipe = manifest_recipe({"authorized": {"recipe": {"name": "old", "epochs": 3, "device": "cuda"}}})
    assert recipe.epochs == 3 and not hasattr(recipe, "device")


class TinyEncoder(Encoder):
    name, dim, default_resolution = "tiny", 4, 16

    def __init__(self, resolution=None, device="cpu"):
        super().__init__(resolution, device)
        self.head = nn.Linear(3, 4)
        self._freeze()

    def embed(self, x):
        return self.head(x.mean(dim=(2, 3)))


def test_encoder_follows_its_buffers_not_its_construction_device():
    enc = TinyEncoder().to("meta")  # built on the CPU, then moved: inputs must go where it is now
    assert enc.device.type == "meta"
    assert enc(torch.rand(2, 3, 8, 8)).device.type == "meta"


def test_distill_teacher_follows_the_batch():
    teacher = create_model("cnn", 3, 3, seed=0, width=8)  # reloaded on the CPU; the batch is elsewhere
    loss = DistillationLoss(teacher)
    x = torch.rand(4, 3, 8, 8, device="meta")
    value = loss(torch.randn(4, 3, device="meta"), x, torch.tensor([0, 1, 2, 0], device="meta"))
    assert next(teacher.parameters()).device == x.device and value.device == x.device


def test_stored_checkpoints_follow_the_batch():
    """UGE keeps checkpoints on the CPU; the gradients are taken where the batch is."""
    from learnlock.losses import param_grads

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    state = {k: v.detach().clone() for k, v in net().state_dict().items()}  # a stored CPU checkpoint
    model = net().to("meta")
    x = torch.rand(4, 3, 8, 8, device="meta")
    grads = param_grads(model, state, ["0.weight", "3.weight"], x, torch.zeros(4, dtype=torch.long, device="meta"),
                        create_graph=False)
    assert all(g.device.type == "meta" for g in grads)
