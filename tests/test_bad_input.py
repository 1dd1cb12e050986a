"""Issue 19: every command checks what it can without data before it loads any, and nothing
unverified passes in silence. Each case: exit code, exactly one `error:` (exit 2) or `warning:`
line, never a traceback, nothing written where it should not be."""

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_folder, write_npz
from learnlock import cli
from learnlock.data.folder import read_image

SMOKE = ["--preset", "smoke", "--authorized-epochs", "1", "--no-progress"]  # the method's tiny settings


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An npz source, a test set, a 32-pixel test set, aux data with other class names, and a uge
    dataset published from the source with its key."""
    root = tmp_path_factory.mktemp("world")
    write_npz(root / "d.npz", n_per_class=6)
    write_npz(root / "t.npz", n_per_class=6, seed=1)
    write_npz(root / "big.npz", n_per_class=6, size=32, seed=2)
    write_npz(root / "aux.npz", n_per_class=6, seed=3, classes=["w", "x", "y", "z"])
    rc = cli.main(["protect", "--method", "uge", "--data", f"npz:{root / 'd.npz'}", "--out", str(root / "pub"),
                   "--authorized", "cnn", "--key-seed", "3", "--key-out", str(root / "key.safetensors"), *SMOKE])
    assert rc == 0
    (root / "notes.txt").write_text("mine")
    return root


@pytest.fixture(autouse=True)
def fresh_machine(tmp_path, monkeypatch):
    """No system datasets, an empty cache: loading Fashion-MNIST would have to download it."""
    monkeypatch.setenv("LEARNLOCK_NO_SYSTEM_DATA", "1")
    monkeypatch.setenv("LEARNLOCK_CACHE", str(tmp_path / "cache"))


def cases(w: Path, t: Path):
    """(name, argv, expected exit, 'error'/'warning', text in that line, paths that must not exist after)."""
    src, pub, key = f"npz:{w / 'd.npz'}", str(w / "pub"), str(w / "key.safetensors")
    return [
        ("evaluate: a model name before Fashion-MNIST is loaded",
         ["evaluate", "--train", "fashion-mnist", "--nets", "alexnet"], 2, "error", "unknown model 'alexnet'",
         [t / "cache"]),
        ("protect: a setting before the data are loaded",
         ["protect", "--method", "uge", "--data", "fashion-mnist", "--authorized", "cnn", "--key-seed", "1",
          "--set", "epochz=3", "--out", str(t / "o")], 2, "error", "unknown setting(s) epochz", [t / "cache", t / "o"]),
        ("protect: a key name before the data are loaded",
         ["protect", "--method", "keyed", "--data", "fashion-mnist", "--authorized", "alexnet", "--key-seed", "1",
          "--out", str(t / "o")], 2, "error", "neither a NetSpec", [t / "cache", t / "o", t / ".o.work"]),
        ("federated: hackers before the data are loaded",
         ["federated", "--data", "fashion-mnist", "--global-arch", "cnn", "--global-seed", "1", "--hackers", "alexnet:1",
          "--out", str(t / "f")], 2, "error", "unknown model 'alexnet'", [t / "cache", t / "f"]),
        ("table1: hackers before the source is loaded",
         ["table1", "--published", pub, "--authorized", key, "--hackers", "alexnet:1", "--no-progress"], 2, "error",
         "unknown model 'alexnet'", []),
        ("audit: an empty attack list",
         ["audit", pub, "--attacks", "", "--out", str(t / "a")], 2, "error", "names no attack", [t / "a"]),
        ("audit: aux with other class names for an attack that uses per-class statistics",
         ["audit", pub, "--authorized", key, "--test", f"npz:{w / 't.npz'}", "--aux", f"npz:{w / 'aux.npz'}",
          "--attacks", "lock-inverse", "--no-progress", "--out", str(t / "a")], 2, "error",
         "the same class names", [t / "a" / "audit.json"]),
        ("train: a test set of another image size",
         ["train", "--data", pub, "--authorized", key, "--test", f"npz:{w / 'big.npz'}", "--no-progress"], 2,
         "error", "32x32", []),
        ("table1: a test set of another image size",
         ["table1", "--published", pub, "--authorized", key, "--test", f"npz:{w / 'big.npz'}", "--hackers", "cnn:1",
          "--distill", "", "--no-progress", "--out", str(t / "t1")], 2, "error", "32x32", [t / "t1" / "table1.json"]),
        ("table1: --cache is a file",
         ["table1", "--published", pub, "--authorized", key, "--cache", str(w / "notes.txt"), "--no-progress"], 2,
         "error", "is not a folder; --cache is a folder of cached cells", []),
        ("audit: --cache is a file",
         ["audit", pub, "--attacks", "retrain", "--cache", str(w / "notes.txt"), "--out", str(t / "a")], 2, "error",
         "is not a folder; --cache is a folder of cached cells", [t / "a"]),
        ("train: --out exists",
         ["train", "--data", pub, "--authorized", key, "--out", str(w / "notes.txt"), "--no-progress"], 2, "error",
         "choose another --out", []),
        ("protect: --out is a file",
         ["protect", "--method", "random", "--data", src, "--out", str(w / "notes.txt")], 2, "error",
         "is not a folder", []),
        ("protect: --key-out is --out",
         ["protect", "--method", "uge", "--data", src, "--authorized", "cnn", "--key-seed", "1",
          "--out", str(t / "p"), "--key-out", str(t / "p"), *SMOKE], 2, "error", "inside it", [t / "p", t / ".p.work"]),
        ("protect: --key-out is an existing file that is not a key",
         ["protect", "--method", "uge", "--data", src, "--authorized", "cnn", "--key-seed", "1",
          "--out", str(t / "p"), "--key-out", str(w / "notes.txt"), *SMOKE], 2, "error",
         "not a learnlock key file", [t / "p", t / ".p.work"]),
        ("audit without a key",
         ["audit", pub, "--test", f"npz:{w / 't.npz'}", "--attacks", "retrain", "--epochs", "1", "--no-progress",
          "--out", str(t / "a")], 0, "warning", "manifest not verified: no key given", []),
        ("evaluate on published:DIR",
         ["evaluate", "--train", f"published:{pub}", "--test", f"npz:{w / 't.npz'}", "--epochs", "1",
          "--no-progress"], 0, "warning", "manifest not verified: no key given", []),
        ("certify",
         ["certify", pub, "--test", f"npz:{w / 't.npz'}", "--arch", "cnn", "--n", "4", "--epochs", "1",
          "--no-progress", "--out", str(t / "c")], 0, "warning", "manifest not verified: no key given", []),
    ]


CASE_NAMES = [c[0] for c in cases(Path("w"), Path("t"))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_one_line(name, world, tmp_path, capsys):
    _, argv, code, kind, text, absent = next(c for c in cases(world, tmp_path) if c[0] == name)
    before = (world / "notes.txt").read_text()
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "warning:"))]
    assert rc == code, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"{kind}:") and text in lines[0], err
    if kind == "error":
        assert err.strip().splitlines()[-1] == lines[0], err  # the last word; progress notes may precede it
    for path in absent:
        assert not path.exists(), f"{path} was written"
    assert (world / "notes.txt").read_text() == before


def test_deleted_authentication_block_is_named(world, tmp_path, capsys):
    import shutil

    shutil.copytree(world / "pub", tmp_path / "pub")
    manifest = json.loads((tmp_path / "pub" / "manifest.json").read_text())
    del manifest["authentication"]
    (tmp_path / "pub" / "manifest.json").write_text(json.dumps(manifest))
    rc = cli.main(["evaluate", "--train", f"published:{tmp_path / 'pub'}", "--test", f"npz:{world / 't.npz'}",
                   "--epochs", "1", "--no-progress"])
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert rc == 0 and len(lines) == 1 and "manifest carries no authentication code" in lines[0]


def test_a_second_run_to_the_same_out_is_refused_at_once(world, tmp_path, capsys):
    work = tmp_path / ".p.work"
    work.mkdir()
    fd = os.open(work, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a first run holds it
    try:
        rc = cli.main(["protect", "--method", "random", "--data", f"npz:{world / 'd.npz'}", "--out", str(tmp_path / "p")])
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "another learnlock run is writing" in err[0]
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.key.safetensors").exists()
    # once the first run is gone (its lock released by the kernel), the same command runs
    assert cli.main(["protect", "--method", "random", "--data", f"npz:{world / 'd.npz'}", "--out",
                     str(tmp_path / "p")]) == 0
    assert not work.exists()


def test_damaged_resumable_state_and_the_resume_line(world, tmp_path, capsys):
    from safetensors.torch import save_file
    import torch

    work = tmp_path / ".p.work"
    work.mkdir()
    save_file({"x": torch.zeros(64)}, str(work / "em-state.safetensors"), metadata={"done": "3", "ident": "{}"})
    data = (work / "em-state.safetensors").read_bytes()
    (work / "em-state.safetensors").write_bytes(data[:40])  # a copy cut short
    args = ["protect", "--method", "em", "--data", f"npz:{world / 'd.npz'}", "--out", str(tmp_path / "p"),
            "--set", "max_rounds=1", "--no-progress"]
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "resumable state in" in err[0] and "is damaged" in err[0] \
        and "delete the folder" in err[0]
    assert not (tmp_path / "p").exists()
    (work / "em-state.safetensors").write_bytes(data)  # whole, but of another run: a resume says so
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert "resuming an interrupted run from" in err and "em-state.safetensors (3 rounds done)" in err
    assert rc == 2 and "other settings or data" in err.strip().splitlines()[-1]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(wide).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    got = read_image(tmp_path / "g.png")[:, :, 0].astype(float)
    assert np.abs(got - wide / 257).max() <= 0.5 and (got == 255).mean() < 0.01
    write_folder(tmp_path / "f", per_class=1)
    Image.fromarray(np.full((6, 8), 1.5, np.float32), "F").save(tmp_path / "f" / "ant" / "x.tiff")
    (tmp_path / "f" / "ant" / "x.tiff").rename(tmp_path / "f" / "ant" / "x.png")  # a float image by its name
    from learnlock.errors import LearnlockError
    with pytest.raises(LearnlockError):
        read_image(tmp_path / "f" / "ant" / "x.png")
