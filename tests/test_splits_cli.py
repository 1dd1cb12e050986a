"""The fixed owner / aux / dev splits through the library's front doors (`load_dataset`, `protect
--split`, `audit --aux-split`), and the audit's leaked-pairs row reading the owner's clean source."""

import json

import numpy as np
import pytest
from PIL import Image

from learnlock import cli
from learnlock.data import load_dataset
from learnlock.data.splits import load_split
from learnlock.errors import LearnlockError
from learnlock.scenarios.audit import load_cells, resolve_attacks


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder with train/ (1,002 per class: the owner, aux ranges exist) and test/; each
    training image's pixel values encode its index, so a split's items can be told apart."""
    root = tmp_path_factory.mktemp("splits")
    rng = np.random.default_rng(0)
    for split, n in (("train", 1002), ("test", 4)):
        for c, colour in enumerate(((200, 40, 40), (40, 200, 40))):
            (root / split / f"k{c}").mkdir(parents=True)
            for i in range(n):
                x = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
                x[2:6, 2:6] = colour  # learnable: the class is the colour of a square
                x[0, 0] = (i % 256, i // 256, 0)
                Image.fromarray(x).save(root / split / f"k{c}" / f"{i:04d}.png")
    return root


def index_of(images):
    return [int(x[0, 0, 0]) + 256 * int(x[1, 0, 0]) for x in images]


def test_load_dataset_takes_the_fixed_splits(folder):
    spec = f"folder:{folder}"
    owner = load_dataset(spec, "owner", per_class=3)
    assert owner.ids == load_split(spec, "owner", per_class=3).ids
    assert index_of(owner.images) == [0, 1, 2, 0, 1, 2]
    aux = load_dataset(spec, "aux", per_class=2)
    assert index_of(aux.images) == [1000, 1001, 1000, 1001]  # the aux range, disjoint from owner
    assert not set(owner.ids) & set(aux.ids)
    with pytest.raises(LearnlockError, match="owner"):  # the error names the fixed splits too
        load_dataset(spec, "validation")


def test_protect_on_the_owner_split_and_audit_with_the_aux_split(folder, tmp_path, capsys):
    spec = f"folder:{folder}"
    assert cli.main(["protect", "--method", "random", "--data", spec, "--split", "owner", "--per-class", "4",
                     "--set", "classwise=true", "--out", str(tmp_path / "pub"), "--no-progress"]) == 0, \
        capsys.readouterr().err
    manifest = json.loads((tmp_path / "pub" / "manifest.json").read_text())
    assert manifest["extra"]["source_load"] == {"spec": spec, "split": "owner", "per_class": 4, "seed": 0}
    published = load_dataset(f"published:{tmp_path / 'pub'}")
    assert sorted(published.ids) == sorted(load_split(spec, "owner", per_class=4).ids)
    argv = ["audit", str(tmp_path / "pub"), "--aux", spec, "--aux-split", "aux", "--aux-per-class", "2",
            "--attacks", "retrain", "--nets", "cnn", "--epochs", "1", "--batch-size", "8", "--no-progress",
            "--out", str(tmp_path / "audit")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    aux = report["about"]["aux"] if "about" in report else report["aux"]
    assert aux["size"] == 4 and aux["source"].endswith(":aux")
    # the clean baseline reloaded the owner split the manifest names (its items are the published ones)
    assert any(c["row"] == "clean" for c in load_cells(tmp_path / "audit"))
    with pytest.raises(SystemExit) as exit_:  # argparse's one error line, exit 2
        cli.main(["protect", "--method", "random", "--data", spec, "--split", "test",
                  "--out", str(tmp_path / "bad"), "--no-progress"])
    assert exit_.value.code == 2 and "argument --split: invalid choice" in capsys.readouterr().err


def test_leaked_pairs_in_an_audit_reads_the_clean_source(folder, tmp_path, capsys):
    """The owner's audit holds the clean source, so leaked-pairs (one clean original of a published
    image) is measured; without a clean source it is skipped with its reason."""
    chosen, skipped = resolve_attacks("all", has_teacher=False, has_aux=False, has_scheme=True)
    assert "leaked-pairs" not in chosen and any(s.startswith("leaked-pairs (needs originals") for s in skipped)
    chosen, _ = resolve_attacks("all", has_teacher=False, has_aux=False, has_scheme=True, has_originals=True)
    assert "leaked-pairs" in chosen
    spec = f"folder:{folder}"
    assert cli.main(["protect", "--method", "keyed", "--preset", "smoke", "--data", spec, "--split", "owner",
                     "--per-class", "6", "--authorized", "cnn", "--key-seed", "1", "--authorized-epochs", "1",
                     "--out", str(tmp_path / "pub"), "--no-progress"]) == 0, capsys.readouterr().err
    assert cli.main(["audit", str(tmp_path / "pub"), "--attacks", "leaked-pairs", "--nets", "cnn", "--epochs", "1",
                     "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "audit")]) == 0, \
        capsys.readouterr().err
    cell = next(c for c in load_cells(tmp_path / "audit") if c["row"] == "leaked-pairs")
    assert cell["config"]["originals"]  # the cell is keyed on the originals it read
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert "leaked-pairs" in json.dumps(report)
