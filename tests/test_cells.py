"""The cell cache every scenario shares (learnlock.cells): a hit gives the stored result, a changed
input or code version misses, a half-written cell is never a result; table1 resumes from it."""

import json
from dataclasses import replace

import pytest
import torch

from conftest import ONE, learnable_dataset, write_npz
from learnlock import NetSpec, cli
from learnlock.cells import CellCache, cell_inputs, cell_key
from learnlock.scenarios import Hacker, authorized_vs_hackers, train_authorized



def test_cell_inputs_record_what_determines_a_result():
    data = learnable_dataset(n_per_class=3)
    key = NetSpec.create("cnn", 4, 3, seed=1)
    got = cell_inputs(data=data, key=key, recipe=ONE, teacher=key.build(), seed=0)
    assert got["data"] == data.fingerprint() and got["key"] == key.fingerprint and got["seed"] == 0
    assert got["recipe"] == ONE.to_dict() and got["bf16"] is False and len(got["teacher"]) == 64
    json.dumps(got)  # all of it is JSON
    base = cell_key("train", got)
    for changed in (dict(seed=1), dict(recipe=replace(ONE, lr=0.1)), dict(recipe=replace(ONE, seed=3)),
                    dict(data=learnable_dataset(n_per_class=3, seed=9)), dict(key=NetSpec.create("cnn", 4, 3, seed=2)),
                    dict(teacher=NetSpec.create("cnn", 4, 3, seed=2).build())):
        inputs = cell_inputs(**{**dict(data=data, key=key, recipe=ONE, teacher=key.build(), seed=0), **changed})
        assert cell_key("train", inputs) != base, changed


def test_code_version_is_part_of_every_key(tmp_path, monkeypatch):
    import learnlock.cells as cells

    cache, calls = CellCache(tmp_path), []
    compute = lambda: calls.append(1) or {"accuracy": len(calls)}  # noqa: E731
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 1}
    monkeypatch.setattr(cells, "code_version", lambda: "another-code")
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 2}   # never the old code's result
    monkeypatch.undo()
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 1} and len(calls) == 2


def test_half_written_cells_are_not_results(tmp_path):
    """What a killed write leaves: a temporary file, a lock file, a torn record, a tensors file whose
    record was never written. None of them is read as finished; the cell is computed again."""
    cache, calls = CellCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"accuracy": 0.5}

    path = cache.path("train", {"seed": 0})
    path.parent.mkdir(parents=True)
    (path.parent / f".{path.name}.abc123.tmp").write_text(json.dumps({"result": {"accuracy": 0.9}}))
    (path.parent / f".{path.name}.lock").write_text("")  # its holder died: the kernel released the flock
    assert cache.get("train", {"seed": 0}) is None
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 0.5} and len(calls) == 1
    path.write_text('{"kind": "train", "result": {"accur')  # torn (not by atomic writes, but never trusted)
    assert cache.get("train", {"seed": 0}) is None
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 0.5} and len(calls) == 2
    assert cache.hits == 0 and cache.computed == 2
    x = torch.arange(6.0)
    cache.run_tensors("weights", {"n": 1}, lambda: {"x": x})
    cache.path("weights", {"n": 1}).unlink()  # killed between the tensors and their record
    assert cache.load_tensors("weights", {"n": 1}) is None
    assert torch.equal(cache.run_tensors("weights", {"n": 1}, lambda: {"x": x + 1})["x"], x + 1)
    assert torch.equal(cache.run_tensors("weights", {"n": 1}, lambda: pytest.fail("recomputed"))["x"], x + 1)


def test_train_authorized_from_the_cache_is_the_trained_network(tmp_path):
    train, test = learnable_dataset(n_per_class=6), learnable_dataset(n_per_class=3, seed=1)
    key, cache = NetSpec.create("cnn", 4, 3, seed=5), CellCache(tmp_path)
    first = train_authorized(train, key, replace(ONE, test_flip=True), progress=False, cache=cache)
    again = train_authorized(train, key, replace(ONE, test_flip=True), progress=False, cache=cache)
    assert cache.computed == 1 and cache.hits == 1
    assert again.test_flip is True and not again.training
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
    assert torch.equal(again(test.images.float() / 255), first.cpu()(test.images.float() / 255))
    train_authorized(train, key, replace(ONE, seed=1), progress=False, cache=cache)  # another seed: trained
    assert cache.computed == 2


def test_authorized_vs_hackers_from_the_cache(tmp_path):
    train, test = learnable_dataset(n_per_class=6), learnable_dataset(n_per_class=3, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=5)
    hackers = [Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)]
    plain = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False)
    first = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False, cache=CellCache(tmp_path))
    again = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False, cache=CellCache(tmp_path))
    assert (first["cells"], first["reused"], again["reused"]) == (3, 0, 3)
    assert again["wall_s"] == first["wall_s"]  # the seconds the trainings took, as recorded
    for a in (first, again):
        assert {k: a[k] for k in ("authorized", "hackers")} == {k: plain[k] for k in ("authorized", "hackers")}
    other = authorized_vs_hackers(train, test, [key], ONE, [Hacker("retrain", "lenet", 2)], ONE, progress=False,
                                  cache=CellCache(tmp_path))
    assert other["reused"] == 1  # the authorized net; hacker seed 2 is a new cell


@pytest.fixture(scope="module")
def published(tmp_path_factory):

    root = tmp_path_factory.mktemp("t1")
    write_npz(root / "d.npz", n_per_class=6)
    write_npz(root / "t.npz", n_per_class=4, seed=1)
    rc = cli.main(["protect", "--method", "uge", "--data", f"npz:{root / 'd.npz'}", "--out", str(root / "pub"),
                   "--authorized", "cnn", "--key-seed", "3", "--key-out", str(root / "key.safetensors"),
                   "--set", "epochs=1", "--set", "encoder_resolution=32", "--set", "diagnostics=false",
                   "--authorized-epochs", "1", "--no-progress"])
    assert rc == 0
    return root


def test_table1_killed_and_rerun_trains_only_what_is_missing(published, tmp_path, capsys, monkeypatch):
    import importlib

    import learnlock.attacks.base as attack_base

    t1 = importlib.import_module("learnlock.scenarios.authorized")  # where every authorized network is trained

    argv = ["table1", "--published", str(published / "pub"), "--authorized", str(published / "key.safetensors"),
            "--test", f"npz:{published / 't.npz'}", "--hackers", "lenet:1", "--distill", "cnn:1", "--seeds", "0,1",
            "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "t1")]
    assert cli.main(argv) == 0
    first, err = capsys.readouterr()
    # the authorized net trains with the manifest's recipe whatever the evaluation seed: one training per row
    assert "2 of 12 trainings reused, 10 trained now" in err, err
    table = (tmp_path / "t1" / "table1.md").read_text()
    cells = tmp_path / "t1" / "cells"
    assert len(list((cells / "authorized").glob("*.safetensors"))) == 2 and len(list((cells / "hacker").glob("*.json"))) == 8
    # the same command again trains nothing and gives the same table
    monkeypatch.setattr(t1, "fit", lambda *a, **k: pytest.fail("the authorized net was trained again"))
    monkeypatch.setattr(attack_base, "fit", lambda *a, **k: pytest.fail("a hacker was trained again"))
    assert cli.main(argv) == 0
    again, err = capsys.readouterr()
    assert "12 of 12 trainings reused, 0 trained now" in err and again == first
    assert (tmp_path / "t1" / "table1.md").read_text() == table
    monkeypatch.undo()
    # killed before two cells were written: the rerun trains those two, and the table is the same
    next(iter(sorted((cells / "hacker").glob("*.json")))).unlink()
    next(iter(sorted((cells / "authorized").glob("*.json")))).unlink()
    assert cli.main(argv) == 0
    again, err = capsys.readouterr()
    assert "10 of 12 trainings reused, 2 trained now" in err, err  # a retrained teacher equals the first here
    assert (tmp_path / "t1" / "table1.md").read_text() == table


def test_evaluate_finds_its_cells_in_a_shared_cache(tmp_path, monkeypatch):
    import learnlock.scenarios.evaluation as evaluation
    from learnlock.scenarios import evaluate_nets

    train, test = learnable_dataset(n_per_class=6), learnable_dataset(n_per_class=3, seed=1)
    nets = ["lenet", NetSpec.create("cnn", 4, 3, seed=3)]
    first = evaluate_nets(train, test, nets, [0, 1], ONE, progress=False, cache=tmp_path / "cells")
    monkeypatch.setattr(evaluation, "fit", lambda *a, **k: pytest.fail("a cell was trained again"))
    again = evaluate_nets(train, test, nets, [0, 1], ONE, out_dir=tmp_path / "other", progress=False,
                          cache=tmp_path / "cells")
    assert again == first
    monkeypatch.undo()
    cache = CellCache(tmp_path / "cells")
    evaluate_nets(train, test, ["lenet"], [0], replace(ONE, lr=0.1), progress=False, cache=cache)
    assert cache.computed == 1  # another recipe: another cell


def test_an_audit_after_table1_reuses_its_trainings(published, tmp_path, capsys, monkeypatch):
    """table1's Original and Normal/Distill hackers are the audit's clean, retrain and distill rows:
    with one cache, the audit trains none of them again, and reports the same accuracies."""
    import importlib

    import learnlock.attacks.base as attack_base

    auth = importlib.import_module("learnlock.scenarios.authorized")
    audit_module = importlib.import_module("learnlock.scenarios.audit")
    common = ["--authorized", str(published / "key.safetensors"), "--test", f"npz:{published / 't.npz'}",
              "--epochs", "1", "--batch-size", "16", "--no-progress", "--cache", str(tmp_path / "cells")]
    assert cli.main(["table1", "--published", str(published / "pub"), "--hackers", "lenet:1", "--distill", "lenet:1",
                     "--out", str(tmp_path / "t1"), *common]) == 0
    capsys.readouterr()
    t1 = json.loads((tmp_path / "t1" / "table1.json").read_text())["rows"]
    for module in (auth, attack_base, audit_module):
        monkeypatch.setattr(module, "fit", lambda *a, **k: pytest.fail("a network was trained again"))
    assert cli.main(["audit", str(published / "pub"), "--attacks", "retrain,distill", "--nets", "lenet",
                     "--seeds", "1", "--out", str(tmp_path / "audit"), *common]) == 0
    assert "".join(capsys.readouterr()).count("another run's training") == 3
    cells = json.loads((tmp_path / "audit" / "audit.json").read_text())["cells"]
    published_row = next(v for k, v in t1.items() if k != "Original")[0]["hackers"]
    assert cells["clean"]["lenet"][0]["accuracy"] == t1["Original"][0]["hackers"]["lenet Normal"]
    assert cells["retrain"]["lenet"][0]["accuracy"] == published_row["lenet Normal"]
    assert cells["distill"]["lenet"][0]["accuracy"] == published_row["lenet Distill"]
