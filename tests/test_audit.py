"""`learnlock audit`: the scoreboard, its cache (an interrupted audit resumes) and its CLI."""

import json
from pathlib import Path

import pytest

from conftest import LEARN, learnable_dataset, write_npz
from learnlock import cli
from learnlock.scenarios.audit import audit, load_cells, resolve_attacks
from learnlock.errors import LearnlockError
from learnlock.models import NetSpec
from learnlock.protections import create_protection



@pytest.fixture(scope="module")
def shortcut():
    """Clean data, and a class-wise noise copy of it: the easy poison every attack is measured on."""
    clean = learnable_dataset(n_per_class=30)
    prot = create_protection("random", rho=8 / 255, classwise=True, seed=0)
    return clean, clean.with_images(prot.apply(clean), source="classwise"), learnable_dataset(10, seed=1), \
        learnable_dataset(8, seed=2)


def cell_file(out, row, net, seed=0):
    """The cache file of one finished audit cell."""
    return Path(next(c["file"] for c in load_cells(out) if (c["row"], c["net"], c["seed"]) == (row, net, seed)))


def run(tmp_path, shortcut, attacks, logs, **kw):
    clean, published, test, aux = shortcut
    return audit(published, test, out_dir=tmp_path / "audit", attacks=attacks, nets=["cnn", "lenet"], seeds=[0],
                 recipe=LEARN, clean=clean, aux=aux, progress=False, log=logs.append, **kw)


def test_audit_table_files_and_ratios(tmp_path, shortcut):
    logs = []
    key = NetSpec.create("cnn", 4, 3, seed=7)
    res = run(tmp_path, shortcut, ["retrain", "iss-bits", "distill", "recover"], logs, key=key,
              settings={"recover": {"epochs": 1, "etas": (0.5,), "eta": 0.5}})
    out = tmp_path / "audit"
    for f in ("audit.json", "audit.md", "audit.png", "recovery.png"):
        assert (out / f).stat().st_size > 0
    assert [r.split(" |")[0].strip("| ") for r in res["table"].splitlines()[2:]] == [
        "clean", f"authorized (cnn {key.fingerprint[:8]})", "aux-only", "retrain", "iss-bits", "distill", "recover"]
    s = res["summary"]
    assert s["clean"]["cnn"]["ratio"] == pytest.approx(1.0)
    # the authorized row against the key network on the clean source (not the seed-0 cnn hacker's clean cell)
    auth = json.loads((out / "audit.json").read_text())["cells"]["authorized"]["cnn"][0]
    assert s["authorized"]["cnn"]["ratio"] == pytest.approx(
        (auth["accuracy"] - 0.25) / (auth["clean_accuracy"] - 0.25))
    for row in ("retrain", "iss-bits", "distill"):
        for net in ("cnn", "lenet") if row != "distill" else ("cnn", "lenet"):
            cell = s[row][net]
            assert 0 <= cell["mean"] <= 1
            assert cell["ratio"] == pytest.approx((cell["mean"] - 0.25) / (s["clean"][net]["mean"] - 0.25))
    curve = json.loads((out / "audit.json").read_text())["cells"]["recover"]["cnn"][0]["curve"]
    assert [c["eta"] for c in curve] == [0.0, 0.5]
    assert len(load_cells(out)) == 2 * 6  # clean + aux-only + 4 attacks, 2 nets, 1 seed (authorized kept apart)


def test_aux_attacks_stand_beside_an_aux_only_baseline_and_an_aux_sweep_reuses_the_rest(tmp_path, shortcut):
    clean, published, test, aux = shortcut
    logs = []
    settings = {"recover": {"epochs": 1, "etas": (0.5,), "eta": 0.5}}
    res = run(tmp_path, shortcut, ["retrain", "recover"], logs, settings=settings)
    s = res["summary"]
    assert set(s) == {"clean", "aux-only", "retrain", "recover"}
    assert res["aux"]["attacks"] == ["recover"]  # retrain does not read the aux set
    for net in ("cnn", "lenet"):
        base, cell = s["aux-only"][net]["ratio"], s["recover"][net]
        assert cell["aux_only_ratio"] == base
        assert cell["beats_aux_only"] == (cell["ratio"] > base + 0.1)
        assert "aux_only_ratio" not in s["retrain"][net]
        assert f"recover on {net}: ratio" in res["notes"]
    # the aux-only cell is the net trained on the aux images alone, with their true labels
    only = next(c for c in load_cells(tmp_path / "audit") if (c["row"], c["net"]) == ("aux-only", "cnn"))
    assert only["config"]["aux"] == aux.fingerprint() and only["config"]["aux_only"] is True
    # another aux size (a sweep point): only the cells that read the aux set train again
    logs.clear()
    smaller = aux.per_class(4, seed=0)
    res = audit(published, test, out_dir=tmp_path / "audit", attacks=["retrain", "recover"], nets=["cnn", "lenet"],
                seeds=[0], recipe=LEARN, clean=clean, aux=smaller, progress=False, log=logs.append, settings=settings)
    trained = sorted(m.split(" seed")[0] for m in logs if "cached" not in m)
    assert trained == ["aux-only cnn", "aux-only lenet", "recover cnn", "recover lenet"]
    assert res["aux"]["size"] == len(smaller)
    # no aux set: no baseline row
    res = audit(published, test, out_dir=tmp_path / "audit", attacks=["retrain"], nets=["cnn"], seeds=[0],
                recipe=LEARN, clean=clean, progress=False, log=logs.append)
    assert "aux-only" not in res["summary"] and res["notes"] == ""


def test_interrupted_audit_resumes_without_recomputing(tmp_path, shortcut):
    logs = []
    run(tmp_path, shortcut, ["retrain", "iss-grayscale"], logs)
    assert not any("cached" in m for m in logs)
    # a killed run: one finished cell is missing, the rest are on disk
    cell_file(tmp_path / "audit", "iss-grayscale", "lenet").unlink()
    logs.clear()
    res = run(tmp_path, shortcut, ["retrain", "iss-grayscale"], logs)
    recomputed = [m for m in logs if "cached" not in m]
    assert recomputed == [m for m in logs if m.startswith("iss-grayscale lenet seed 0")] and len(recomputed) == 1
    assert "iss-grayscale" in res["summary"]
    # a changed setting invalidates exactly that attack's cells
    logs.clear()
    run(tmp_path, shortcut, ["retrain", "iss-bits"], logs, settings={"iss-bits": {"bits": 3}})
    assert sum("cached" not in m for m in logs) == 2 and all("iss-bits" in m for m in logs if "cached" not in m)


def test_attack_selection():
    chosen, skipped = resolve_attacks("all", has_teacher=False, has_aux=False)
    assert "retrain" in chosen and "distill" not in chosen and "recover" not in chosen
    assert any(s.startswith("distill (needs teacher") for s in skipped)
    with pytest.raises(LearnlockError, match="needs"):
        resolve_attacks("retrain,recover", has_teacher=False, has_aux=False)
    with pytest.raises(LearnlockError, match="unknown attack"):
        resolve_attacks("retrain,nope", has_teacher=True, has_aux=True)


def test_audit_refuses_mismatched_sets(tmp_path, shortcut):
    clean, published, test, aux = shortcut
    wrong = learnable_dataset(5, classes=3)
    with pytest.raises(LearnlockError, match="test set"):
        audit(published, wrong, out_dir=tmp_path, attacks=["retrain"], recipe=LEARN, progress=False)
    with pytest.raises(LearnlockError, match="settings given"):
        audit(published, test, out_dir=tmp_path, attacks=["retrain"], recipe=LEARN, progress=False,
              settings={"iss-jpeg": {"quality": 5}})


def test_cli_audit_on_a_published_folder(tmp_path, capsys):
    write_npz(tmp_path / "d.npz")
    write_npz(tmp_path / "t.npz", seed=1)
    spec, test = f"npz:{tmp_path / 'd.npz'}", f"npz:{tmp_path / 't.npz'}"
    assert cli.main(["protect", "--method", "random", "--data", spec, "--set", "classwise=true",
                     "--out", str(tmp_path / "pub"), "--no-progress"]) == 0, capsys.readouterr().err
    common = ["--epochs", "2", "--batch-size", "16", "--no-progress"]
    # without --test the source's test split is used: an npz has none, so its training images are refused
    assert cli.main(["audit", str(tmp_path / "pub"), "--out", str(tmp_path / "a0"), *common]) == 2
    assert "shares 48 of its 48 images" in capsys.readouterr().err
    argv = ["audit", str(tmp_path / "pub"), "--test", test, "--attacks", "retrain,iss-jpeg,cutout",
            "--set", "iss-jpeg.quality=20", "--nets", "cnn", "--out", str(tmp_path / "audit"), *common]
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "| clean" in out and "| iss-jpeg" in out and "| cutout" in out
    cell = next(c for c in load_cells(tmp_path / "audit") if c["row"] == "iss-jpeg")
    assert cell["config"]["settings"] == {"quality": 20} and cell["net"] == "cnn" and cell["seed"] == 0
    assert cli.main(argv[:4] + ["--set", "jpeg=20"] + argv[4:]) == 2
    assert "ATTACK.NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["audit", str(tmp_path / "pub"), "--test", test, "--attacks", "recover",
                     "--out", str(tmp_path / "a2"), *common]) == 2
    assert "auxiliary clean set" in capsys.readouterr().err
