"""Hackers (attacks registry), the Table-1 scenario and its report, and the protect/train/table1 CLI."""

import json
import math
from dataclasses import replace

import pytest

from conftest import learnable_dataset, write_npz
from learnlock import NetSpec, cli
from learnlock.attacks import get_attack
from learnlock.errors import LearnlockError
from learnlock.recipe import Recipe
from learnlock.report import learnability_ratio
from learnlock.scenarios import Hacker, authorized_vs_hackers, ratios, table1_markdown

TINY = Recipe(name="tiny", epochs=4, batch_size=32, lr=0.05, augment="flip")


def test_distill_needs_a_teacher():
    with pytest.raises(LearnlockError, match="needs the trained authorized network"):
        get_attack("distill")().train(learnable_dataset(n_per_class=4), "cnn", 0, TINY, progress=False)


def test_authorized_vs_hackers_and_table():
    train, test = learnable_dataset(n_per_class=20), learnable_dataset(n_per_class=10, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=5)
    hackers = [Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)]
    res = authorized_vs_hackers(train, test, [key], TINY, hackers, TINY, progress=False)
    assert res["authorized"] >= 0.8 and set(res["hackers"]) == {"lenet s1 Normal", "cnn s1 Distill"}
    # A "protected" row where the hackers did worse: ratios follow the formula.
    worse = {**res, "hackers": {k: 0.25 + 0.5 * (v - 0.25) for k, v in res["hackers"].items()}}
    rows = {"Original": [res], "Protected": [worse, worse]}
    md = table1_markdown(rows, num_classes=4)
    assert md.splitlines()[0].startswith("| data") and "(1.00)" in md and "(0.50)" in md
    r = ratios(rows, 4)
    assert r["Original"]["authorized_ratio"] == pytest.approx(1.0)
    assert r["Protected"]["worst_hacker_ratio"] == pytest.approx(0.5)
    with pytest.raises(LearnlockError, match="clean row"):
        table1_markdown({"Protected": [worse]}, 4)


def test_learnability_ratio():
    assert learnability_ratio(0.55, 1.0, 10) == pytest.approx(0.5)
    assert learnability_ratio(0.1, 0.9, 10) == pytest.approx(0.0)
    assert math.isnan(learnability_ratio(0.3, 0.105, 10))  # clean training failed: no ratio


def test_cli_protect_train_table1_end_to_end(tmp_path, capsys):
    write_npz(tmp_path / "d.npz")
    write_npz(tmp_path / "t.npz", seed=1)  # other images: the test set
    common = ["--epochs", "2", "--batch-size", "16", "--no-progress"]
    rc = cli.main(["protect", "--method", "uge", "--preset", "paper", "--data", f"npz:{tmp_path / 'd.npz'}",
                   "--authorized", "cnn", "--key-secret", "open sesame", "--rho", "0.04",
                   "--set", "epochs=1", "--set", "encoder_resolution=32", "--set", "diagnostics=false",
                   "--out", str(tmp_path / "pub"), "--authorized-epochs", "2", *common[2:]])
    assert rc == 0, capsys.readouterr().err
    key = tmp_path / "pub.key.safetensors"
    manifest = json.loads((tmp_path / "pub" / "manifest.json").read_text())
    assert manifest["authorized"]["networks"][0]["fingerprint"] == NetSpec.load(key).fingerprint
    assert "pub.key" not in json.dumps(manifest) and not (tmp_path / ".pub.work").exists()
    # The same command again is refused (never overwrite), and a wrong key is refused by train.
    assert cli.main(["protect", "--method", "uge", "--data", f"npz:{tmp_path / 'd.npz'}", "--authorized", "cnn",
                     "--key-seed", "1", "--out", str(tmp_path / "pub")]) == 2
    assert "exists" in capsys.readouterr().err
    NetSpec.create("cnn", 4, 3, seed=99).save(tmp_path / "other.safetensors")
    assert cli.main(["train", "--authorized", str(tmp_path / "other.safetensors"),
                     "--data", str(tmp_path / "pub")]) == 2
    assert "give --test to report test accuracy or --out" in capsys.readouterr().err  # else nothing is kept
    assert cli.main(["train", "--authorized", str(tmp_path / "other.safetensors"),
                     "--data", str(tmp_path / "pub"), "--out", str(tmp_path / "w.safetensors")]) == 2
    assert "wrong key" in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["train", "--authorized", str(key), "--data", str(tmp_path / "pub"),
                     "--out", str(tmp_path / "trained.safetensors"), "--no-progress"]) == 0
    assert (tmp_path / "trained.safetensors").exists()
    # the training file is refused as the test set; a separate one is taken
    assert cli.main(["table1", "--published", str(tmp_path / "pub"), "--authorized", str(key),
                     "--test", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "report")]) == 2
    assert "shares 48 of its 48 images with the training data" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    rc = cli.main(["table1", "--published", str(tmp_path / "pub"), "--authorized", str(key),
                   "--test", f"npz:{tmp_path / 't.npz'}", "--hackers", "lenet:1", "--distill", "cnn:1",
                   "--out", str(tmp_path / "report"), *common])
    out = capsys.readouterr().out
    assert rc == 0 and "| Original" in out and "| paper (pub)" in out and "lenet Normal" in out
    for f in ("table1.json", "table1.md", "authorized_vs_hackers.png", "grid.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0


def test_table1_wrong_key_column_is_a_hacker_and_is_cached(tmp_path):
    """A wrong key (the authorized architecture from another seed) is a hacker column: it counts in
    the verdict's worst hacker, and a rerun reuses its cells."""
    from learnlock.cells import CellCache
    from learnlock.scenarios.table1 import WRONG_KEY, authorized_vs_hackers_many

    train, test = learnable_dataset(n_per_class=12), learnable_dataset(n_per_class=6, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=5, width=8)
    hackers = [Hacker(WRONG_KEY, "key", 7)]
    cache = CellCache(tmp_path / "cells")
    cases = [("Original", train, False, hackers), ("Protected", train, True, hackers)]
    first = authorized_vs_hackers_many(cases, test, [key], TINY, TINY, progress=False, cache=cache)
    assert list(first[0]["hackers"]) == ["wrong key s7"] and first[0]["reused"] == 0
    # the same data and recipe through another initialisation: not the authorized network's accuracy bytes
    again = authorized_vs_hackers_many(cases, test, [key], TINY, TINY, progress=False, cache=cache)
    assert [r["reused"] for r in again] == [2, 2]
    assert again[1]["hackers"] == first[1]["hackers"]
    rows = {"Original": [first[0]], "Protected": [first[1]]}
    assert "wrong key" in table1_markdown(rows, 4)


def test_table1_key_cost_is_the_plain_network_minus_the_authorized_one():
    from learnlock.scenarios.table1 import Table1

    rows = {"Original": [{"authorized": 0.70, "hackers": {"fastnet Normal": 0.74, "cnn Normal": 0.6}}],
            "keyed (pub)": [{"authorized": 0.69, "hackers": {"fastnet Normal": 0.1, "cnn Normal": 0.1}}]}
    t = Table1(rows, 10, 100, 100, "src", "keyed abc", TINY, TINY, plain_arch="fastnet")
    assert t.key_cost()["points"] == pytest.approx(4.0) and t.to_dict()["key_cost"]["plain"] == "fastnet Normal"
    assert replace(t, plain_arch="resnet8").key_cost() is None  # the plain network was not measured
