"""`fit` (batches copied once per epoch, loss read once per epoch) against a plain step-by-step
reference loop: the loop fit was before it was made fast. In fp32 on CPU they must give the very
same weights, bit for bit."""

from dataclasses import replace

import pytest
import torch

from conftest import learnable_dataset
from learnlock.callbacks import ItemTargets
from learnlock.data import ImageDataset
from learnlock.data.manifest import manifest_recipe
from learnlock.errors import LearnlockError
from learnlock.models import create_model
from learnlock.recipe import Recipe
from learnlock.training import Callback, apply_augment, batch_schedule, cross_entropy, fit, make_optimizer

TINY = Recipe(name="tiny", epochs=2, batch_size=16, lr=0.05, precision="fp32")


def reference_fit(model, data, recipe, callbacks=(), steps=None):
    """The old fit, step by step: indices and draws moved per step, the loss read every step."""
    images, labels, n = data.images, data.labels, len(data)
    total_steps = steps or recipe.epochs * (n // recipe.batch_size + (n % recipe.batch_size >= 2))
    opt, sched = make_optimizer(model, recipe, total_steps)
    for cb in callbacks:
        cb.on_fit_start(model, recipe)
    epoch = 1
    model.train()
    for s in batch_schedule(n, recipe, steps):
        if s.epoch != epoch:
            model.eval()
            for cb in callbacks:
                cb.on_epoch_end(model, epoch)
            epoch = s.epoch
            model.train()
        x = apply_augment(images[s.index].float().div_(255), s.augment)
        y = labels[s.index]
        for cb in callbacks:
            x, y = cb.on_batch(model, x, y, s.step)
        model.train()
        value = cross_entropy(model(x), x, y)
        assert torch.isfinite(value)
        opt.zero_grad(set_to_none=True)
        value.backward()
        for cb in callbacks:
            cb.on_backward(model, s.step)
        opt.step()
        sched.step()
        for cb in callbacks:
            cb.on_step_end(model, s.step)
    model.eval()
    for cb in callbacks:
        cb.on_epoch_end(model, epoch)
    return model.eval()


class FGSM(Callback):
    """Changes each batch with the model (like a PGD training callback) and shifts the labels."""

    def on_batch(self, model, x, y, step):
        model.eval()
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        x = (x + 4 / 255 * x.grad.sign()).clamp(0, 1).detach()
        model.zero_grad(set_to_none=True)
        return x, (y + step % 2) % 4


def data33():
    """33 items at batch 16: batches of 16, 16 and a single item that is skipped (BatchNorm)."""
    d = learnable_dataset(n_per_class=10)
    return ImageDataset(d.images[:33], d.labels[:33], d.classes, d.ids[:33], d.source)


@pytest.mark.parametrize("augment", ["crop+flip", "roll+flip"])
@pytest.mark.parametrize("steps", [None, 7])
@pytest.mark.parametrize("callback", [None, FGSM])
def test_fit_gives_the_weights_of_the_reference_loop(augment, steps, callback):
    data, recipe = data33(), replace(TINY, augment=augment)
    fast, slow = create_model("cnn", 4, 3, seed=0), create_model("cnn", 4, 3, seed=0)
    fit(fast, data, recipe, callbacks=[callback()] if callback else [], progress=False, steps=steps)
    reference_fit(slow, data, recipe, callbacks=[callback()] if callback else [], steps=steps)
    a, b = fast.state_dict(), slow.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert any(not torch.equal(a[k], v) for k, v in create_model("cnn", 4, 3, seed=0).state_dict().items())


@pytest.mark.parametrize("augment", ["crop+flip", "roll+flip"])
@pytest.mark.parametrize("steps", [None, 5])
def test_fit_trains_on_exactly_the_batches_of_batch_schedule(augment, steps):
    data, recipe = data33(), replace(TINY, augment=augment)
    seen = []

    class Spy(Callback):
        def on_batch(self, model, x, y, step):
            seen.append((step, x.clone(), y.clone()))
            return x, y

    fit(create_model("lenet", 4, 3, seed=0), data, recipe, callbacks=[Spy()], progress=False, steps=steps)
    plan = list(batch_schedule(len(data), recipe, steps))
    assert [s.step for s in plan] == [step for step, _, _ in seen] == list(range(steps or 4))
    for s, (_, x, y) in zip(plan, seen):
        assert torch.equal(apply_augment(data.images[s.index].float() / 255, s.augment), x)
        assert torch.equal(data.labels[s.index], y)


def test_item_targets_follow_fit_s_batches():
    data = data33()
    targets = torch.softmax(torch.randn(len(data), 4, generator=torch.Generator().manual_seed(0)), 1)
    seen = []

    class Spy(Callback):
        def on_batch(self, model, x, y, step):
            seen.append((step, y.clone()))
            return x, y

    recipe = replace(TINY, augment="crop+flip")
    fit(create_model("lenet", 4, 3, seed=0), data, recipe, callbacks=[ItemTargets(targets), Spy()], progress=False)
    plan = list(batch_schedule(len(data), recipe))
    assert len(seen) == len(plan) == 4
    assert all(s.step == step and torch.equal(targets[s.index], y) for s, (step, y) in zip(plan, seen))


def test_divergence_is_caught_once_per_epoch_with_a_clear_error():
    data = learnable_dataset(n_per_class=4)
    with pytest.raises(LearnlockError, match=r"training diverged: loss is nan at epoch \d, step \d+; "
                                             r"lower the learning rate \(recipe 'tiny' has lr=1e\+30\)"):
        fit(create_model("cnn", 4, 3, seed=0), data, replace(TINY, epochs=3, lr=1e30), progress=False)

    class Poison(Callback):  # NaN pixels from step 3 on: the error names that step
        def on_batch(self, model, x, y, step):
            return (x * float("nan") if step >= 3 else x), y

    with pytest.raises(LearnlockError, match="at epoch 1, step 3;"):
        fit(create_model("cnn", 4, 3, seed=0), data, TINY, callbacks=[Poison()], progress=False, steps=20)


def test_precision_is_checked_and_left_out_of_keys_when_auto():
    with pytest.raises(LearnlockError, match=r"precision must be one of \('auto', 'fp32', 'bf16', 'native'\), got 'fp16'"):
        Recipe(precision="fp16")
    old_keys = {"name", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "augment", "crop_padding", "seed"}
    assert set(Recipe().to_dict()) == old_keys   # manifests and cache keys of default recipes do not change
    assert Recipe(precision="bf16").to_dict()["precision"] == "bf16"
    for recipe in (Recipe(), Recipe(precision="bf16")):   # what a manifest holds gives the recipe back
        assert manifest_recipe({"authorized": {"recipe": recipe.to_dict()}}) == recipe


def test_auto_precision_on_cpu_is_fp32_and_bf16_trains():
    data = data33()
    auto, fp32, bf16 = (create_model("cnn", 4, 3, seed=0) for _ in range(3))
    fit(auto, data, replace(TINY, precision="auto"), progress=False)
    fit(fp32, data, TINY, progress=False)
    fit(bf16, data, replace(TINY, precision="bf16"), progress=False)
    a, b, c = auto.state_dict(), fp32.state_dict(), bf16.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(c[k].dtype == b[k].dtype and torch.isfinite(c[k].float()).all() for k in c)
    assert any(not torch.equal(c[k], b[k]) for k in c if c[k].is_floating_point())
