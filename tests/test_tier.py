"""The 10k tier's parts: fastnet and the fast recipe, the fixed splits, the cell cache, and
bench/tier10k.py end to end at tiny size."""

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learnlock.cells import CellCache, cell_key, code_version
from learnlock.data.splits import RANGES, load_split, split_index
from learnlock.errors import LearnlockError
from learnlock.models import create_model
from learnlock.recipe import RECIPES, Recipe
from learnlock.training import EpochAccuracy, fit, make_optimizer, predict

ROOT = Path(__file__).resolve().parents[1]


def test_splits_are_disjoint_nested_and_in_file_order():
    labels = [c for c in range(3) for _ in range(2300)]
    parts = {name: split_index(labels, 3, name) for name in RANGES}
    assert [len(parts[n]) for n in RANGES] == [3000, 3000, 600]
    assert not set(parts["owner"]) & set(parts["aux"]) and not set(parts["aux"]) & set(parts["dev"])
    assert not set(parts["owner"]) & set(parts["dev"])
    small = split_index(labels, 3, "owner", per_class=100)
    assert set(small) <= set(parts["owner"]) and len(small) == 300      # the 1k tier sits inside the 10k tier
    assert split_index(labels, 3, "aux", per_class=5)[:5] == list(range(1000, 1005))
    with pytest.raises(LearnlockError, match="holds 200 images per class"):
        split_index(labels, 3, "dev", per_class=201)
    with pytest.raises(LearnlockError, match="needs 2200"):
        split_index(labels[:2100 * 3], 3, "dev")


def test_load_split_reads_only_its_range(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / "train" / c / f"{i:04d}.png")
    owner = load_split(f"folder:{tmp_path}", "owner", per_class=3)
    assert owner.ids == ("a/0000.png", "a/0001.png", "a/0002.png", "b/0000.png", "b/0001.png", "b/0002.png")
    assert owner.images[2].max().item() == 2 and owner.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(LearnlockError, match="needs 1001"):
        load_split(f"folder:{tmp_path}", "aux", per_class=1)
    with pytest.raises(LearnlockError, match="folder:PATH"):
        load_split("folder:", "owner")
    with pytest.raises(LearnlockError, match="split must be one of"):
        load_split(f"folder:{tmp_path}", "train")


def test_cell_cache_computes_once_and_keys_on_inputs(tmp_path):
    cache, calls = CellCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"accuracy": 0.5}

    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 0.5}
    assert cache.run("train", {"seed": 0}, compute) == {"accuracy": 0.5} and len(calls) == 1
    cache.run("train", {"seed": 1}, compute)
    assert len(calls) == 2
    record = json.loads(cache.path("train", {"seed": 0}).read_text())
    assert record["code_version"] == code_version() and "git_commit" in record and "wall_time_s" in record
    assert cell_key("train", {"a": 1, "b": 2}) == cell_key("train", {"b": 2, "a": 1})
    assert not list(tmp_path.rglob("*.tmp"))


def test_cell_cache_failure_writes_nothing_and_tensors_round_trip(tmp_path):
    cache = CellCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.run("train", {"x": 1}, lambda: (_ for _ in ()).throw(RuntimeError("killed")))
    assert not cache.path("train", {"x": 1}).exists()   # a failed cell is computed again next time
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    out = cache.run_tensors("protect", {"m": "em"}, lambda: {"images": x}, meta=lambda: {"rounds": 3})
    again = cache.run_tensors("protect", {"m": "em"}, lambda: pytest.fail("recomputed"))
    assert torch.equal(out["images"], x) and torch.equal(again["images"], x)
    assert cache.get("protect", {"m": "em"}) == {"rounds": 3}


def test_code_version_follows_the_source(tmp_path, monkeypatch):
    import learnlock.cells as cells

    assert len(code_version()) == 16 and code_version() == code_version()
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "cells.py").write_text("a = 1\n")
    monkeypatch.setattr(cells, "__file__", str(fake / "cells.py"))
    cells.code_version.cache_clear()
    first = cells.code_version()
    (fake / "cells.py").write_text("a = 2\n")
    cells.code_version.cache_clear()
    assert cells.code_version() != first
    cells.code_version.cache_clear()


def test_old_recipes_keep_their_keys_and_new_fields_are_checked():
    assert set(RECIPES["cpu"].to_dict()) == {"name", "epochs", "batch_size", "optimizer", "lr", "momentum",
                                             "nesterov", "weight_decay", "schedule", "augment", "crop_padding", "seed"}
    fast = RECIPES["fast"].to_dict()
    assert "precision" not in fast and fast["label_smoothing"] == 0.2 and fast["test_flip"] is True
    assert Recipe(**fast) == RECIPES["fast"]      # a manifest's recipe gives the recipe back
    for bad, match in ((dict(label_smoothing=1.0), "label_smoothing"), (dict(warmup=0), "warmup"),
                       (dict(precision="fp16"), "precision")):
        with pytest.raises(LearnlockError, match=match):
            Recipe(**bad)
    assert Recipe(precision="native").uses_bf16(torch.device("cuda")) and not Recipe().uses_bf16(torch.device("cpu"))


def test_onecycle_rises_to_lr_then_falls_to_zero():
    model = torch.nn.Linear(2, 2)
    recipe = Recipe(schedule="onecycle", lr=0.2, warmup=0.25)
    opt, sched = make_optimizer(model, recipe, steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = max(range(100), key=lrs.__getitem__)
    assert peak == 24 and math.isclose(lrs[peak], 0.2) and lrs[0] < 0.01 and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_fast_recipe_trains_fastnet_with_smoothing_and_flip_at_test_time(learnable):
    data = learnable(n_per_class=24, classes=3)
    recipe = replace(RECIPES["fast"], epochs=3, batch_size=16, precision="fp32")
    history = EpochAccuracy(train=data)
    model = fit(create_model("fastnet", 3, 3, seed=0), data, recipe, callbacks=[history], progress=False)
    assert len(history.history["train"]) == 3
    assert model.test_flip is True
    logits = predict(model, data)
    with torch.no_grad():
        x = data.images.float() / 255
        both = (model(x) + model(x.flip(3))) / 2
    assert torch.allclose(logits, both, atol=1e-5)          # the test-time flip average
    model.test_flip = False
    assert not torch.allclose(predict(model, data), both, atol=1e-5)


def test_label_smoothing_reaches_the_loss(learnable):
    """Same init, same batches: only the smoothing differs, so the trained weights must differ,
    and smoothing 0 is exactly the old loss."""
    data = learnable(n_per_class=8, classes=3)
    weights = {}
    for smoothing in (0.0, 0.5):
        recipe = Recipe(epochs=1, batch_size=24, label_smoothing=smoothing, augment="none", precision="fp32")
        model = fit(create_model("cnn", 3, 3, seed=0), data, recipe, progress=False)
        weights[smoothing] = torch.cat([p.flatten() for p in model.parameters()])
    plain = fit(create_model("cnn", 3, 3, seed=0), data, Recipe(epochs=1, batch_size=24, augment="none",
                                                                precision="fp32"), progress=False)
    assert torch.equal(weights[0.0], torch.cat([p.flatten() for p in plain.parameters()]))
    assert not torch.allclose(weights[0.0], weights[0.5])


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A CIFAR-like folder the fixed splits fit: 2 classes, 2,200 train and 6 test 16x16 images each."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 2200), ("test", 6)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i:04d}.png")
    return root


def test_tier10k_runs_end_to_end_at_tiny_size(tmp_path, tiny_cifar):
    """The calibration script on a tiny CIFAR-like folder; a rerun trains nothing."""
    (tmp_path / "data").symlink_to(tiny_cifar)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "tier10k.py"), "--data", f"folder:{tmp_path / 'data'}",
                          "--per-class", "8", "--dev-per-class", "4", "--epochs", "1", "--protections", "clean,ar",
                          "--defences", "none,iss-grayscale", "--extra-defences", "", "--cache", str(tmp_path / "cells"),
                          "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert {(r["protection"], r["defence"]) for r in result["rows"]} == {
        ("clean", "none"), ("clean", "iss-grayscale"), ("ar", "none"), ("ar", "iss-grayscale")}
    assert all(len(r["dev_per_epoch"]) == 1 for r in result["rows"])
    assert "| pass mark |" in (tmp_path / "out" / "calibration.md").read_text()
    cells = sorted((tmp_path / "cells" / "train").glob("*.json"))
    assert len(cells) == 4
    again = subprocess.run(out.args, capture_output=True, text=True, timeout=300)   # a rerun trains nothing
    assert again.returncode == 0 and sorted((tmp_path / "cells" / "train").glob("*.json")) == cells
    assert json.loads((tmp_path / "out" / "calibration.json").read_text())["rows"] == result["rows"]
    bf16 = subprocess.run(out.args[:-3] + ["--out", str(tmp_path / "bf16"), "--precision", "bf16", "--no-progress"],
                          capture_output=True, text=True, timeout=300)   # hackers in bf16 on the same pixels
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    assert len(list((tmp_path / "cells" / "train").glob("*.json"))) == 8         # four new hacker cells
    fp32 = subprocess.run(out.args[:-3] + ["--out", str(tmp_path / "fp32"), "--precision", "fp32", "--no-progress"],
                          capture_output=True, text=True, timeout=300)   # what the CPU recipes already train in
    assert fp32.returncode == 0 and len(list((tmp_path / "cells" / "train").glob("*.json"))) == 8
    meta = json.loads((tmp_path / "bf16" / "calibration.json").read_text())
    assert meta["recipes"]["fast"]["precision"] == "bf16" and meta["hacker_precision"] == "bf16"
    assert "hackers trained in bf16" in (tmp_path / "bf16" / "calibration.md").read_text()
    probe = subprocess.run(out.args[:-3] + ["--out", str(tmp_path / "probe"), "--aux-as-owner", "3", "--no-progress"],
                           capture_output=True, text=True, timeout=300)   # a size probe: 8 owner + 3 aux per class
    assert probe.returncode == 0, probe.stderr[-2000:]
    probe_meta = json.loads((tmp_path / "probe" / "calibration.json").read_text())
    assert probe_meta["owner"] == 22 and probe_meta["aux_as_owner"] == 3
    assert "the owner set plus the first 3 aux images per class" in (tmp_path / "probe" / "calibration.md").read_text()


def test_tier10k_precision_is_the_hackers_not_the_protections(tmp_path, tiny_cifar, monkeypatch):
    """--precision bf16 trains the hackers under bf16 and protects with the recipe's own precision
    (a keyed protection's authorized network), so precisions compare on the same published pixels."""
    spec = importlib.util.spec_from_file_location("tier10k_precision", ROOT / "bench" / "tier10k.py")
    tier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tier)
    protected, trained = [], []
    monkeypatch.setattr(tier, "protect", lambda cache, name, owner, recipe, log: protected.append(recipe.precision)
                        or (owner.images, {}, None))
    monkeypatch.setattr(tier, "train_cell", lambda *a, **k: trained.append((a[7], a[8].precision)) or {
        "accuracy": 0.5, "dev_per_epoch": [0.5], "best_dev": 0.5, "final_dev": 0.5, "best_dev_epoch": 1, "train_s": 0.0})
    (tmp_path / "data").symlink_to(tiny_cifar)
    assert tier.main(["--data", f"folder:{tmp_path / 'data'}", "--per-class", "4", "--dev-per-class", "2",
                      "--protections", "clean,em", "--defences", "none", "--extra-defences", "", "--precision", "bf16",
                      "--cache", str(tmp_path / "cells"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert protected == ["auto", "auto"] and {p for _, p in trained} == {"bf16"}
    assert {net for net, _ in trained} == {"fastnet", "cnn"}


def test_tier10k_runs_only_the_extra_defences_and_refuses_unknown_names(tmp_path, tiny_cifar, monkeypatch, capsys):
    """--defences '' plans only the extra defences (no cnn rows then); an unknown protection or defence
    is refused with exit 2 before any data is read."""
    spec = importlib.util.spec_from_file_location("tier10k_extra", ROOT / "bench" / "tier10k.py")
    tier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tier)
    trained = []
    monkeypatch.setattr(tier, "protect", lambda cache, name, owner, recipe, log: (owner.images, {}, None))
    monkeypatch.setattr(tier, "train_cell", lambda *a, **k: trained.append((a[7], a[5], a[6])) or {
        "accuracy": 0.5, "dev_per_epoch": [0.5], "best_dev": 0.5, "final_dev": 0.5, "best_dev_epoch": 1, "train_s": 0.0})
    (tmp_path / "data").symlink_to(tiny_cifar)
    args = ["--data", f"folder:{tmp_path / 'data'}", "--per-class", "4", "--dev-per-class", "2", "--protections",
            "clean,em-fastnet", "--cache", str(tmp_path / "cells"), "--out", str(tmp_path / "out"), "--no-progress"]
    assert tier.main(args + ["--defences", "", "--extra-defences", "ueraser"]) == 0
    assert trained == [("fastnet", "clean", "ueraser"), ("fastnet", "em-fastnet", "ueraser")]
    for bad in (["--defences", "none,grayscale"], ["--protections", "clean,emm"]):
        with pytest.raises(SystemExit) as stop:
            tier.main(args + bad)
        assert stop.value.code == 2 and "unknown protection or defence" in capsys.readouterr().err
    assert len(trained) == 2


def test_tier10k_takes_a_rows_pixels_from_a_protect_cell(tmp_path, tiny_cifar, monkeypatch, capsys):
    """--pixels ROW=PATH trains on a protect cell's pixels (made by any code version) instead of
    protecting anew, after checking they were made from this owner split; a keyed row is refused."""
    spec = importlib.util.spec_from_file_location("tier10k_pixels", ROOT / "bench" / "tier10k.py")
    tier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tier)
    from learnlock.cells import CellCache
    from learnlock.data.splits import load_split
    owner = load_split(f"folder:{tiny_cifar}", "owner", 4)
    made, _, _ = tier.protect(CellCache(tmp_path / "old"), "ar", owner, tier.get_recipe("fast"), print)
    (cell,) = (tmp_path / "old" / "protect").glob("*.safetensors")
    seen = []
    monkeypatch.setattr(tier, "protect", lambda *a, **k: pytest.fail("protected anew"))
    monkeypatch.setattr(tier, "train_cell", lambda *a, **k: seen.append(a[2]) or {
        "accuracy": 0.5, "dev_per_epoch": [0.5], "best_dev": 0.5, "final_dev": 0.5, "best_dev_epoch": 1, "train_s": 0.0})
    args = ["--data", f"folder:{tiny_cifar}", "--dev-per-class", "2", "--protections", "ar", "--defences", "none",
            "--extra-defences", "", "--cache", str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--no-progress"]
    assert tier.main(args + ["--per-class", "4", "--pixels", f"ar={cell}"]) == 0
    assert len(seen) == 1 and torch.equal(seen[0], made)
    meta = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert meta["protections"]["ar"]["pixels_from"] == str(cell)
    for bad, why in ((["--per-class", "5", "--pixels", f"ar={cell}"], "was made from data"),
                     (["--per-class", "4", "--pixels", f"keyed={cell}"], "a keyed row needs its issued key")):
        with pytest.raises(SystemExit) as stop:
            tier.main(args + bad)
        assert stop.value.code == 2 and why in capsys.readouterr().err


def test_gpu_tier_stages_write_json_and_a_rerun_skips_them(tmp_path, tiny_cifar):
    """bench/gpu_tier.py's cell stages on the CPU at tiny size (no timing): each stage's JSON, the
    keyed authorized cell, and a rerun that skips finished stages."""
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_tier.py"), "--data", str(tiny_cifar), "--device", "cpu",
           "--stages", "1,2", "--per-class", "6", "--full-per-class", "8", "--dev-per-class", "4", "--epochs", "1",
           "--out", str(tmp_path / "gpu")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for stage, size in ((1, 12), (2, 16)):
        result = json.loads((tmp_path / "gpu" / f"stage-{stage}.json").read_text())
        assert result["complete"] and result["owner"] == size
        assert set(result["noise"]) == {"em", "keyed"} and 0 <= result["noise"]["em"]["luma_linear_acc"] <= 1
        got = {(r["protection"], r["defence"], r["net"]) for r in result["rows"]}
        assert ("keyed", "authorized", "fastnet") in got and ("em", "iss-jpeg", "resnet18") in got and len(got) == 19
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    grey = subprocess.run(cmd[:cmd.index("--stages") + 1] + ["3"] + cmd[cmd.index("--stages") + 2:] + ["--max-rounds", "1"],
                          capture_output=True, text=True, timeout=600)   # the paper's em, asked for by name
    assert grey.returncode == 0, grey.stdout[-2000:] + grey.stderr[-2000:]
    result = json.loads((tmp_path / "gpu" / "stage-3.json").read_text())
    assert {(r["protection"], r["defence"], r["net"]) for r in result["rows"]} == {
        (p, d, n) for p in ("clean", "em-paper") for d in ("none", "iss-grayscale") for n in ("fastnet", "resnet18")}
    late = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "late"), "--deadline", "0"], capture_output=True,
                          text=True, timeout=600)
    assert late.returncode == 1 and "deadline" in late.stdout           # nothing starts after the deadline
    assert (tmp_path / "late" / "stage-1.partial.json").exists() and not (tmp_path / "late" / "stage-1.json").exists()


def test_keyed_front_reads_report_json(tmp_path):
    """bench/keyed_front.py on the committed 10k example report: the worst ratio of each attacker
    group and the key cost as the report states them; a JSON that is no keyed report is refused."""
    example = ROOT / "docs" / "examples" / "keyed-cifar10k" / "report.json"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "keyed_front.py"), str(example), "--out",
                          str(tmp_path / "front.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (point,) = json.loads((tmp_path / "front.json").read_text()).values()
    again = subprocess.run([*out.args[:3], str(example), "--out", str(tmp_path / "two.png")], capture_output=True,
                           text=True, timeout=120)   # the same point twice: two points, not one overwritten
    assert again.returncode == 0, again.stderr
    assert list(json.loads((tmp_path / "two.json").read_text())) == ["colour 32/255", "colour 32/255 (2)"]
    assert (point["normal"]["attack"], point["no_clean_data"]["attack"], point["any"]["attack"]) == (
        "wrong-key", "key-search", "leaked-pairs")
    assert point["normal"]["ratio"] < point["no_clean_data"]["ratio"] < point["any"]["ratio"]
    assert point["key_cost_points"] == pytest.approx(0.47, abs=0.01) and point["psnr_db"] == pytest.approx(24.2, abs=0.1)
    assert (tmp_path / "front.png").stat().st_size > 0
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "keyed_front.py"), str(tmp_path / "other.json"),
                          "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_one_attack_and_clean_recipe_scripts(tmp_path, tiny_cifar):
    """bench/one_attack.py (one audit row on a published folder) and bench/clean_recipe.py (a plain net
    with recipe overrides) at tiny size: their JSON holds what the BENCHMARKS rows quote."""
    from learnlock import cli

    data = f"folder:{tiny_cifar}"
    run = lambda *a: subprocess.run([sys.executable, *map(str, a)], capture_output=True, text=True, timeout=300)  # noqa: E731
    out = run(ROOT / "bench" / "clean_recipe.py", "--data", data, "--per-class", "4", "--net", "cnn", "--recipe", "cpu",
              "--set", "epochs=1", "--set", "crop_padding=0", "--out", tmp_path / "flip.json")
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads((tmp_path / "flip.json").read_text())
    assert row["overrides"] == {"epochs": 1, "crop_padding": 0} and row["recipe"]["crop_padding"] == 0
    assert row["train_size"] == 8 and row["test_size"] == 12 and 0 <= row["accuracy"] <= 1
    assert cli.main(["protect", "--method", "keyed", "--data", data, "--split", "owner", "--per-class", "4",
                     "--authorized", "cnn", "--key-seed", "3", "--key-out", str(tmp_path / "key.safetensors"),
                     "--set", "family=mosaic", "--set", "max_rounds=1", "--set", "noise_steps=1", "--set", "train_steps=1",
                     "--authorized-epochs", "1", "--no-progress", "--out", str(tmp_path / "pub")]) == 0
    out = run(ROOT / "bench" / "one_attack.py", tmp_path / "pub", tmp_path / "key.safetensors", "key-estimate",
              "--net", "cnn", "--recipe", "cpu", "--clean-accuracy", "0.75", "--out", tmp_path / "row.json")
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["report"]["family"] == "mosaic" and 0 <= row["report"]["agreement_with_true_key"] <= 1
    assert math.isclose(row["ratio"], (row["accuracy"] - 0.5) / 0.25) and row["test_size"] == 12   # 2 classes


def test_keyed_gonogo_runs_a_config_at_tiny_size(tmp_path, tiny_cifar):
    """bench/keyed_gonogo.py (issue 23's go/no-go) on a tiny folder: the pattern config protects,
    runs the authorized, wrong-key and hacker rows at two seeds, rates each hacker against its own
    clean baseline (the 60-epoch lenet against the 60-epoch clean lenet), and a rerun trains nothing."""
    rows = ["authorized", "clean keyed", "wrong key", "clean wrong key", "cnn (Normal hacker)", "clean cnn",
            "lenet (Normal hacker)", "clean lenet", "lenet 60 epochs (Normal hacker)", "clean lenet 60 epochs"]
    cmd = [sys.executable, str(ROOT / "bench" / "keyed_gonogo.py"), "--config", "pattern-fmnist", "run",
           "--threads", "1", "--data", f"folder:{tiny_cifar}", "--per-class", "3", "--out", str(tmp_path / "cells"),
           "--docs", str(tmp_path / "docs"), "--only", ",".join(rows)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "docs" / "pattern-fmnist-gonogo-dev.json").read_text())
    got = {r["row"]: r for r in report["rows"]}
    assert set(got) == set(rows)
    assert got["authorized"]["seeds"] == [1, 2] and got["cnn (Normal hacker)"]["seeds"] == [1, 2]
    acc = {r: got[r]["accuracy"] for r in got}
    for hacker, clean in (("lenet 60 epochs (Normal hacker)", "clean lenet 60 epochs"),
                          ("lenet (Normal hacker)", "clean lenet"), ("wrong key", "clean wrong key")):
        if abs(acc[clean] - 0.1) > 1e-6:
            assert got[hacker]["ratio"] == pytest.approx((acc[hacker] - 0.1) / (acc[clean] - 0.1), abs=1e-3)
    assert all(got[r]["ratio"] in (None, pytest.approx(1.0)) for r in rows if r.startswith("clean ") and acc[r] > 0.1 + 1e-6)
    assert got["lenet 60 epochs (Normal hacker)"]["goal"] == "<= 0.5"
    assert got["lenet 60 epochs (Normal hacker)"]["cell"]["recipe"]["epochs"] == 60
    manifest = json.loads(next((tmp_path / "cells" / "published" / "keyed").glob("manifest.json")).read_text())
    assert manifest["settings"]["noise"] == "pattern"
    cells = sorted((tmp_path / "cells" / "gonogo").glob("*.json"))
    assert len(cells) == 2 * len(rows)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[cell]" in again.stdout
    assert sorted((tmp_path / "cells" / "gonogo").glob("*.json")) == cells
    assert [c.stat().st_mtime for c in cells] == [c.stat().st_mtime for c in sorted((tmp_path / "cells" / "gonogo").glob("*.json"))]


def test_grey_pattern_probe_caches_its_rows(tmp_path, tiny_cifar):
    """bench/grey_pattern.py (one dev candidate of the grey-image key) at tiny size: its JSON line,
    a pattern that lies in S up to clipping, the clean baselines at --rho 0, and a cached rerun."""
    cmd = [sys.executable, str(ROOT / "bench" / "grey_pattern.py"), "--data", f"folder:{tiny_cifar}", "--per-class", "3",
           "--rows", "authorized,wrong,lenet60", "--cache", str(tmp_path / "cells"), "--out", str(tmp_path / "c.jsonl")]
    for extra in ([], ["--rho", "0"]):
        out = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    noisy, clean = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert 0 < noisy["outside_energy_share"] < 0.5 and noisy["psnr_db"] < 40
    assert clean["outside_energy_share"] == 0 and clean["psnr_db"] > 100
    assert {"authorized", "wrong", "lenet60"} <= set(noisy)
    cells = sorted((tmp_path / "cells" / "grey-pattern").glob("*.json"))
    assert len(cells) == 6
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and sorted((tmp_path / "cells" / "grey-pattern").glob("*.json")) == cells
    assert json.loads(again.stdout.strip().splitlines()[-1]) == noisy
    bad = subprocess.run(cmd + ["--rows", "vgg99"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown row" in bad.stderr


def test_aux_sweep_and_gray_why_share_the_tiers_em_cell(tmp_path, tiny_cifar):
    """bench/aux_sweep.py and bench/gray_why.py at tiny size on one cell cache: each writes its rows,
    both read the one em protection cell the tier made (the min-min runs once), and a rerun trains
    nothing."""
    common = ["--data", f"folder:{tiny_cifar}", "--per-class", "8", "--dev-per-class", "4", "--epochs", "1",
              "--cache", str(tmp_path / "cells"), "--out", str(tmp_path / "out"), "--no-progress"]
    aux = [sys.executable, str(ROOT / "bench" / "aux_sweep.py"), "--sizes", "4", *common]
    gray = [sys.executable, str(ROOT / "bench" / "gray_why.py"), "--sizes", "4,8,4:2", "--long-epochs", "2",
            "--variants", "crop4", *common]
    for cmd in (aux, gray):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    assert len(list((tmp_path / "cells" / "protect").glob("*.safetensors"))) == 1
    sweep = json.loads((tmp_path / "out" / "aux_sweep.json").read_text())
    assert [r["aux_per_class"] for r in sweep["rows"]] == [0, 4]
    assert all(r["beats_aux_only"] in (True, False, None) for r in sweep["rows"])
    why = json.loads((tmp_path / "out" / "gray_why.json").read_text())
    assert [(r["per_class"], r["epochs"], r["hacker"]) for r in why["rows"]] == [
        (4, 1, "fast"), (8, 1, "fast"), (4, 2, "fast"), (8, 2, "fast"), (8, 1, "crop4")]
    assert 0 < why["noise"]["luma_energy_share"] < 1
    cells = sorted((tmp_path / "cells").rglob("*.json"))
    for cmd in (aux, gray):
        assert subprocess.run(cmd, capture_output=True, text=True, timeout=600).returncode == 0
    assert sorted((tmp_path / "cells").rglob("*.json")) == cells
    bad = subprocess.run(gray + ["--variants", "crop9"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr
    bad = subprocess.run(gray + ["--sizes", "4:x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--sizes takes" in bad.stderr


def test_tier10k_pass_marks_cover_every_em_variant():
    """The calibration's EM pass marks are read for the tier's em row and for each em variant measured
    (an em-fastnet row gets its own grayscale check and its own cnn agreement); unmeasured variants
    are not listed."""
    spec = importlib.util.spec_from_file_location("tier10k", ROOT / "bench" / "tier10k.py")
    tier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tier)

    def row(net, prot, defence, acc):
        return {"net": net, "protection": prot, "defence": defence, "seed": 0, "accuracy": acc, "best_dev": acc,
                "final_dev": acc, "train_s": 1.0}

    rows = [row("fastnet", "clean", "none", 0.7), row("fastnet", "clean", "iss-grayscale", 0.6),
            row("fastnet", "em-fastnet", "none", 0.1), row("fastnet", "em-fastnet", "iss-grayscale", 0.58),
            row("cnn", "clean", "none", 0.5), row("cnn", "em-fastnet", "none", 0.3)]
    summary, text = tier.summarise(rows, {"owner": 1, "test": 1, "dev": 1, "code_version": "x", "date": "d"})
    checks = {c["check"]: c for c in summary["checks"]}
    assert checks["EM under grayscale vs clean under grayscale (em-fastnet)"]["passed"] is True   # 0.48 / 0.5
    assert checks["EM ratio, no defence (em-fastnet)"]["value"] == 0.0
    assert checks["EM ratio: cpu/cnn agrees with fast/fastnet (em-fastnet)"]["passed"] is False    # 0.5 vs 0.0
    assert checks["EM ratio, no defence"]["passed"] is None                                    # the tier's em: not run
    assert "EM under JPEG-10 vs clean under JPEG-10 (em-fastnet)" not in checks                 # not measured
    assert all(t["published"] == tier.ANCHORS[("em", t["defence"])] for t in summary["table"]
               if t["protection"] == "em-fastnet" and t["net"] == "fastnet")


def test_tier10k_merge_sets_later_rows_against_the_main_clean_rows(tmp_path):
    """tier10k_merge: the later rows' ratios use the main table's clean rows of their defences; the check
    compares only the clean cells it can (the evaluator's, those defences) and refuses a mismatch."""
    def row(net, prot, defence, seed, acc):
        return {"net": net, "protection": prot, "defence": defence, "seed": seed, "accuracy": acc, "best_dev": acc,
                "final_dev": acc, "train_s": 1.0, "dev_per_epoch": [acc], "best_dev_epoch": 1}
    meta = {"owner": 10, "dev": 2, "test": 10, "code_version": "a", "date": "d"}
    main_rows = [row("fastnet", "clean", "none", 0, 0.7), row("fastnet", "clean", "ueraser", 0, 0.5),
                 row("fastnet", "clean", "iss-grayscale", 0, 0.6)]
    later = [row("fastnet", "em-x", "none", 0, 0.1), row("fastnet", "em-x", "ueraser", 0, 0.3)]
    check = [row("fastnet", "clean", "none", 0, 0.7), row("fastnet", "clean", "iss-jpeg", 0, 0.4),
             row("cnn", "clean", "none", 0, 0.55)]   # other defences and nets: not comparable, not compared
    for name, rows in (("main", main_rows), ("later", later), ("check", check)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}))
    cmd = [sys.executable, str(ROOT / "bench" / "tier10k_merge.py"), "--main", str(tmp_path / "main.json"),
           "--rows", str(tmp_path / "later.json"), "--check", str(tmp_path / "check.json"), "--protection", "em-x",
           "--out", str(tmp_path / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    table = {(t["protection"], t["defence"]): t for t in json.loads((tmp_path / "out" / "calibration.json").read_text())["table"]}
    assert set(table) == {("clean", "none"), ("clean", "ueraser"), ("em-x", "none"), ("em-x", "ueraser")}
    assert math.isclose(table[("em-x", "ueraser")]["ratio"], (0.3 - 0.1) / (0.5 - 0.1))
    check[0] = row("fastnet", "clean", "none", 0, 0.69)   # the later code's clean cell differs: refused
    (tmp_path / "check.json").write_text(json.dumps({**meta, "rows": check}))
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "differs between code versions" in bad.stdout + bad.stderr


def _noise_shortcuts():
    spec = importlib.util.spec_from_file_location("noise_shortcuts", ROOT / "bench" / "noise_shortcuts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_noise_shortcuts_tells_a_class_pattern_from_iid_noise_and_luma_from_chroma():
    """A per-class pattern is linearly separable with its energy in the class means; iid noise is
    neither; a chroma-only class pattern is separable while its luma image (what grayscale keeps) is not."""
    ns = _noise_shortcuts()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(100)
    clean = torch.rand(1000, 3, 8, 8, generator=g) * 255
    pattern = torch.randn(10, 1, 8, 8, generator=g).sign() * 4
    luma_dir = torch.ones(1, 3, 1, 1)
    chroma_dir = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 4   # 0.299 * 0.587 - 0.587 * 0.299 = 0
    iid = torch.randn(1000, 3, 8, 8, generator=g) * 4
    cls = ns.noise_stats(clean, clean + pattern[labels] * luma_dir + iid * 0.25, labels)
    assert cls["noise_linear_acc"] > 0.95 and cls["luma_linear_acc"] > 0.95 and cls["luma_class_mean_share"] > 0.5
    rnd = ns.noise_stats(clean, clean + iid, labels)
    assert rnd["noise_linear_acc"] < 0.3 and rnd["noise_class_mean_share"] < 0.05
    chroma = ns.noise_stats(clean, clean + pattern[labels] * chroma_dir, labels)
    assert chroma["noise_linear_acc"] > 0.95 and chroma["luma_linear_acc"] < 0.3 and chroma["luma_rms_255"] < 1e-3


def test_noise_shortcuts_reads_a_protect_cell_and_refuses_other_originals(tmp_path, tiny_cifar, capsys):
    """The CLI measures a cached protect cell against the split it was made from and stops with exit
    2 when told another split (the recorded fingerprint differs)."""
    ns = _noise_shortcuts()
    from learnlock.cells import CellCache
    from learnlock.data.splits import load_split
    from learnlock.recipe import get_recipe
    owner = load_split(f"folder:{tiny_cifar}", "owner", 8)
    ns.tier10k.protect(CellCache(tmp_path / "cells"), "ar", owner, get_recipe("fast"), print)
    (pixels,) = (tmp_path / "cells" / "protect").glob("*.safetensors")
    args = [str(pixels), "--data", f"folder:{tiny_cifar}", "--out", str(tmp_path / "out")]
    assert ns.main(args + ["--name", "ar", "--per-class", "8"]) == 0
    row = json.loads((tmp_path / "out" / "noise_shortcuts.json").read_text())["rows"]["ar"]
    assert row["images"] == 16 and row["noise_rms_255"] > 0 and 0 <= row["luma_linear_acc"] <= 1
    assert 0 <= row["clean_linear_acc"] <= 1 and "the clean images'" in (tmp_path / "out" / "noise_shortcuts.md").read_text()
    with pytest.raises(SystemExit) as stop:
        ns.main(args + ["--name", "ar", "--per-class", "7"])
    assert stop.value.code == 2 and "was made from data" in capsys.readouterr().err
    made = ["--data", f"folder:{tiny_cifar}", "--out", str(tmp_path / "out"), "--per-class", "8",
            "--cache", str(tmp_path / "cells")]
    assert ns.main(made + ["--row", "ar", "--name", "ar made"]) == 0   # the same cell, found in the cache
    rows = json.loads((tmp_path / "out" / "noise_shortcuts.json").read_text())["rows"]
    assert rows["ar made"]["row"] == "ar" and rows["ar made"]["noise_rms_255"] == rows["ar"]["noise_rms_255"]
    assert len(list((tmp_path / "cells" / "protect").glob("*.safetensors"))) == 1
    for both_or_neither in ([str(pixels), "--row", "ar"], []):
        with pytest.raises(SystemExit) as stop:
            ns.main(made + both_or_neither + ["--name", "x"])
        assert stop.value.code == 2 and "either PIXELS" in capsys.readouterr().err
