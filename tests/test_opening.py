"""open_published: every scenario opens a published folder by one policy (the key given, or the one
shipped in the folder; the clean source and the test set the manifest records; a missing record)."""

import pytest

from conftest import learnable_dataset, write_npz
from learnlock import NetSpec, cli, load_dataset
from learnlock.errors import LearnlockError, LearnlockWarning
from learnlock.protections import ProtectionContext, create_protection
from learnlock.scenarios import open_published

KEYED = ["--set", "max_rounds=1", "--set", "noise_steps=1", "--set", "train_steps=1", "--set", "batch_size=8"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A keyed folder published by the CLI with its key shipped inside (--include-weights), and a
    random-noise folder written by the library, whose manifest records no source."""
    root = tmp_path_factory.mktemp("opening")
    write_npz(root / "d.npz", n_per_class=4)
    write_npz(root / "t.npz", n_per_class=3, seed=1)
    rc = cli.main(["protect", "--method", "keyed", "--data", f"npz:{root / 'd.npz'}", "--authorized", "cnn",
                   "--key-seed", "3", "--key-out", str(root / "key.safetensors"), "--include-weights",
                   *KEYED, "--authorized-epochs", "1", "--no-progress", "--out", str(root / "pub")])
    assert rc == 0
    data = learnable_dataset(n_per_class=4, classes=4, size=16)
    create_protection("random", ProtectionContext(), seed=0).protect(data, root / "bare")
    return root


def test_the_shipped_key_is_used_with_a_note(root):
    notes = []
    opened = open_published(root / "pub", test=f"npz:{root / 't.npz'}", log=notes.append)
    assert opened.key.fingerprint == NetSpec.load(root / "key.safetensors").fingerprint
    assert opened.key_recipe.epochs == 1 and any("shipped" in n for n in notes)
    # the clean source and its test split come from the manifest's record
    assert opened.clean.ids == opened.data.ids and len(opened.test) == 12
    with pytest.raises(LearnlockError, match="shares 8 of its 8 images"):   # True: the recorded source's test split
        open_published(root / "pub", test=True, test_per_class=2)          # (an npz has none: its train split again)
    given = open_published(root / "pub", root / "key.safetensors", test=f"npz:{root / 't.npz'}", log=notes.append)
    assert given.key.fingerprint == opened.key.fingerprint and len(notes) == 1  # a given key: no note


def test_a_wrong_key_is_refused_with_one_error_line(root, capsys):
    NetSpec.create("cnn", 4, 3, seed=99).save(root / "other.safetensors", overwrite=True)
    with pytest.raises(LearnlockError, match="wrong key"):
        open_published(root / "pub", root / "other.safetensors", test=False)
    for argv in (["audit", str(root / "pub"), "--authorized", str(root / "other.safetensors"), "--test",
                  f"npz:{root / 't.npz'}", "--attacks", "retrain", "--out", str(root / "audit")],
                 ["table1", "--published", str(root / "pub"), "--authorized", str(root / "other.safetensors"),
                  "--out", str(root / "t1")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "wrong key" in err[0], err
    assert not (root / "audit").exists() and not (root / "t1").exists()


def test_a_missing_source_record(root):
    notes = []
    with pytest.warns(LearnlockWarning, match="no authentication code"):
        opened = open_published(root / "bare", test=f"npz:{root / 't.npz'}", log=notes.append)
    assert opened.key is None and opened.clean is None and any("no clean baseline" in n for n in notes)
    for test in (None, True):   # no recorded source: the test set must be given
        with pytest.warns(LearnlockWarning), pytest.raises(LearnlockError, match="give the clean test set"):
            open_published(root / "bare", test=test)
    with pytest.warns(LearnlockWarning), pytest.raises(LearnlockError, match="does not say how to reload"):
        open_published(root / "bare", test=False, clean=True)  # table1's Original row needs it
    with pytest.warns(LearnlockWarning):
        clean = open_published(root / "bare", test=False, clean=f"npz:{root / 'd.npz'}").clean
    assert clean.ids == opened.data.ids  # a clean set given by spec stands in for the record
    with pytest.warns(LearnlockWarning), pytest.raises(LearnlockError, match="items are not those"):
        open_published(root / "bare", test=False, clean=f"npz:{root / 't.npz'}")


def test_one_seed_for_every_subset(root):
    spec = f"npz:{root / 't.npz'}"
    opened = open_published(root / "pub", test=spec, test_per_class=2, subset_seed=5)
    assert opened.test.ids == load_dataset(spec, "test", per_class=2, seed=5).ids
    assert opened.test.ids != load_dataset(spec, "test", per_class=2, seed=0).ids


def test_publish_once_protects_once_per_want(tmp_path):
    """publish_once (bench scripts' published sets): the same `want` opens the folder without
    protecting again, its key travels beside it and verifies; another `want` protects anew."""
    from learnlock.scenarios import publish_once

    data = learnable_dataset(n_per_class=4, classes=3, size=8)
    calls = []

    def make(seed=0):
        def build():
            calls.append(seed)
            key = NetSpec.create("cnn", 3, 3, seed=5, width=8)
            return create_protection("keyed", ProtectionContext([key]), preset="smoke", seed=seed)
        return build

    out = tmp_path / "published" / "keyed"
    first, seconds = publish_once(out, make(0), data, {"seed": 0})
    assert calls == [0] and seconds >= 0 and first.key is not None
    assert (tmp_path / "published" / "keyed.key.safetensors").exists()
    again, _ = publish_once(out, make(0), data, {"seed": 0})
    assert calls == [0] and again.data.fingerprint() == first.data.fingerprint()
    other, _ = publish_once(out, make(1), data, {"seed": 1})
    assert calls == [0, 1] and other.data.fingerprint() != first.data.fingerprint()
    assert other.key.fingerprint == first.key.fingerprint   # the same key network, new noise
