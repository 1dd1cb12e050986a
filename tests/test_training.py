import json
from dataclasses import replace

import pytest
import torch

from conftest import LEARN, learnable_dataset
from learnlock import cli
from learnlock.errors import LearnlockError
from learnlock.losses import DistillationLoss
from learnlock.recipe import Recipe, get_recipe
from learnlock.scenarios.evaluation import evaluate_nets, results_table
from learnlock.models import create_model
from learnlock.callbacks import Trajectory
from learnlock.training import augment_batch, evaluate, fit



def test_fit_learns_a_learnable_task():
    train, test = learnable_dataset(seed=0), learnable_dataset(n_per_class=20, seed=1)
    model = create_model("cnn", 4, 3, seed=0)
    before = evaluate(model, test)
    fit(model, train, LEARN, progress=False)
    assert evaluate(model, test) >= 0.9 > before + 0.3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_is_deterministic_and_seed_sensitive(precision):
    """Same seed, same bytes in either precision (on one machine and thread count: bf16 kernels
    differ between CPUs with and without bf16 instructions)."""
    data = learnable_dataset(n_per_class=16)

    def run(init_seed, data_seed):
        m = create_model("cnn", 4, 3, seed=init_seed)
        fit(m, data, replace(LEARN, epochs=2, augment="crop+flip", seed=data_seed, precision=precision), progress=False)
        return m.state_dict()

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_augment_is_a_crop_and_flip_of_the_input():
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, replace(LEARN, augment="crop+flip", crop_padding=2), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(len(x)):  # each output is some shifted (and maybe mirrored) window of the padded input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        windows = [padded[:, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    assert not torch.equal(out, x)


def test_trajectory_keeps_init_and_each_epoch(tmp_path):
    data = learnable_dataset(n_per_class=8)
    model = create_model("lenet", 4, 3, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    traj = Trajectory(directory=tmp_path)
    fit(model, data, replace(LEARN, epochs=3), callbacks=[traj], progress=False)
    assert traj.epochs == [0, 1, 2, 3] and traj.steps == [0, 1, 2, 3]  # 32 items, batch 32
    assert all(torch.equal(traj.states[0][k], init[k]) for k in init)
    assert all(torch.equal(traj.states[-1][k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step_00000{i}.safetensors" for i in range(4)]


def test_batch_schedule_replays_fit_exactly():
    """UGE replays the authorized run; the replay must match what fit trains on, batch by batch."""
    from learnlock.training import apply_augment, batch_schedule

    data = learnable_dataset(n_per_class=10)
    recipe = replace(LEARN, epochs=2, batch_size=16, augment="crop+flip")
    seen = []

    class Spy(Trajectory):
        def on_batch(self, model, x, y, step):
            seen.append((step, x.clone(), y.clone()))
            return super().on_batch(model, x, y, step)

    spy = Spy(every_steps=2)
    fit(create_model("lenet", 4, 3, seed=0), data, recipe, callbacks=[spy], progress=False)
    plan = list(batch_schedule(len(data), recipe))
    assert len(plan) == len(seen) == 2 * 3  # 40 items: batches of 16, 16, 8
    for s, (step, x, y) in zip(plan, seen):
        assert s.step == step
        assert torch.equal(apply_augment(data.images[s.index].float() / 255, s.augment), x)
        assert torch.equal(data.labels[s.index], y)
    assert spy.steps == [0, 2, 3, 4, 6]  # every 2 steps, plus epoch ends (after step 2 and 5)


def test_fit_with_steps_takes_that_many_steps_on_batches_drawn_with_replacement():
    """Step-counted training (a DDPM's): exactly `steps` optimiser steps, each on a full batch drawn
    with replacement, as batch_schedule replays them; on_backward runs once per step."""
    from learnlock.training import Callback, batch_schedule

    data = learnable_dataset(n_per_class=3)   # 12 items
    recipe = replace(LEARN, batch_size=8)
    seen, backward = [], []

    class Spy(Callback):
        def on_batch(self, model, x, y, step):
            seen.append((step, y.clone()))
            return x, y

        def on_backward(self, model, step):
            backward.append(all(p.grad is not None for p in model.parameters()))

    fit(create_model("lenet", 4, 3, seed=0), data, recipe, callbacks=[Spy()], progress=False, steps=5)
    plan = list(batch_schedule(len(data), recipe, steps=5))
    assert [s.step for s in plan] == [step for step, _ in seen] == list(range(5))
    assert all(s.epoch == 1 and len(s.index) == 8 for s in plan)
    assert all(torch.equal(data.labels[s.index], y) for s, (_, y) in zip(plan, seen))
    assert any(len(set(s.index.tolist())) < 8 for s in plan)   # some item twice in one batch
    assert backward == [True] * 5
    with pytest.raises(LearnlockError, match="steps"):
        fit(create_model("lenet", 4, 3, seed=0), data, recipe, progress=False, steps=0)


def test_distillation_loss_pulls_student_to_teacher():
    data = learnable_dataset(n_per_class=20)
    teacher = fit(create_model("cnn", 4, 3, seed=0), data, LEARN, progress=False)
    # Labels scrambled: only the teacher's outputs can teach the student the task.
    scrambled = type(data)(data.images, data.labels[torch.randperm(len(data))], data.classes, data.ids, "x")
    assert evaluate(teacher, data) >= 0.9
    student = fit(create_model("cnn", 4, 3, seed=5), scrambled, replace(LEARN, epochs=15),
                  loss=DistillationLoss(teacher, temperature=1.0), progress=False)
    assert evaluate(student, data) >= 0.85


def test_distillation_loss_formula():
    teacher = torch.nn.Linear(3, 4)
    x, logits = torch.randn(5, 3), torch.randn(5, 4)
    t = 2.0
    p = torch.softmax(teacher(x) / t, 1)
    q = torch.softmax(logits / t, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean() * t * t
    got = DistillationLoss(teacher, temperature=t)(logits, x.view(5, 3), None)
    assert torch.allclose(got, expected, atol=1e-6)


def test_bad_recipe_and_mismatched_model():
    with pytest.raises(LearnlockError, match="lr must be a positive number"):
        Recipe(lr=-1)
    with pytest.raises(LearnlockError, match="unknown recipe 'turbo'"):
        get_recipe("turbo")
    data = learnable_dataset(n_per_class=4)
    with pytest.raises(LearnlockError, match="check in_channels=3"):
        fit(create_model("cnn", 4, 1, seed=0), data, LEARN, progress=False)
    with pytest.raises(LearnlockError, match="has 4 classes; create it with num_classes=4"):
        fit(create_model("cnn", 10, 3, seed=0), data, LEARN, progress=False)


def test_nan_input_reports_divergence():
    data = learnable_dataset(n_per_class=4)
    model = create_model("cnn", 4, 3, seed=0)
    with pytest.raises(LearnlockError, match="training diverged"):
        fit(model, data, replace(LEARN, lr=1e30), progress=False)


def test_harness_writes_results_and_resumes(tmp_path, monkeypatch):
    train, test = learnable_dataset(n_per_class=12), learnable_dataset(n_per_class=6, seed=1)
    recipe = replace(LEARN, epochs=1)
    rows = evaluate_nets(train, test, ["cnn", "lenet"], [0, 1], recipe, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(r["net"], r["seed"]) for r in saved["rows"]] == [("cnn", 0), ("cnn", 1), ("lenet", 0), ("lenet", 1)]
    assert saved["train"]["size"] == 48 and saved["recipe"]["epochs"] == 1 and "git_commit" in saved
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    table = results_table(rows)
    assert table.count("\n") == 3 and "cnn" in table and "±" in table

    # A rerun with one more seed trains only the new cells.
    import learnlock.scenarios.evaluation as ev
    calls = []
    real = ev.train_one
    monkeypatch.setattr(ev, "train_one", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    evaluate_nets(train, test, ["cnn", "lenet"], [0, 1, 2], recipe, out_dir=tmp_path, progress=False)
    assert calls == [("cnn", 2), ("lenet", 2)]
    with pytest.raises(LearnlockError, match="different run"):
        evaluate_nets(train, test, ["cnn"], [0], replace(recipe, epochs=2), out_dir=tmp_path, progress=False)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    rc = cli.main(["evaluate", "--train", f"folder:{tmp_path / 'missing'}", "--nets", "cnn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "does not exist" in err[0]
    rc = cli.main(["evaluate", "--train", "fashion-mnist", "--nets", "alexnet"])
    assert rc == 2 and "unknown model 'alexnet'" in capsys.readouterr().err
