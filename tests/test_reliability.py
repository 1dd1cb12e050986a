"""Bad input ends in one `error:` line and exit 2, never a traceback; an edited manifest is
refused by the key that authenticated it."""

import json

import pytest

from conftest import learnable_dataset
from learnlock import cli
from learnlock.data.published import read_manifest, write_published
from learnlock.errors import LearnlockError
from learnlock.keys import check_key_matches
from learnlock.models import NetSpec

RECIPE = {"name": "tiny", "epochs": 1, "batch_size": 8, "augment": "none"}


@pytest.fixture
def keyed_pub(tmp_path):
    """A published dataset with an authorized cnn key (the key file beside it), its clean source
    (an npz the manifest names) and a separate test set."""
    import numpy as np

    from learnlock.data import load_dataset

    def npz(path, seed):
        d = learnable_dataset(n_per_class=4, classes=3, size=8, seed=seed)
        np.savez(path, x=d.images.permute(0, 2, 3, 1).numpy(), y=d.labels.numpy(), classes=np.array(list(d.classes)))
        return f"npz:{path}"

    source, test = npz(tmp_path / "d.npz", 0), npz(tmp_path / "t.npz", 1)
    data = load_dataset(source)
    key = NetSpec.create("cnn", 3, 3, seed=3)
    auth = {"networks": [{"arch": "cnn", "kwargs": {}, "num_classes": 3, "in_channels": 3,
                          "fingerprint": key.fingerprint}], "recipe": RECIPE}
    pub = write_published(tmp_path / "pub", data, data.images, method="test", rho=8 / 255, settings={}, seed=0,
                          authorized=auth, keys=[key],
                          extra={"source_load": {"spec": source, "split": "train", "per_class": None, "seed": 0}})
    key.save(tmp_path / "key.safetensors")
    return pub, tmp_path / "key.safetensors", test


def one_error_line(capsys, rc, expect: str):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2, err
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert expect in errors[0], errors[0]


def test_the_key_verifies_its_manifest(keyed_pub):
    pub, key_path, _ = keyed_pub
    key = NetSpec.load(key_path)
    m = read_manifest(pub)
    assert check_key_matches(key, m) == 0
    assert set(m["authentication"]["macs"]) == {key.fingerprint}
    assert m["authentication"]["macs"][key.fingerprint] != key.fingerprint  # not derived from public data
    # the code is keyed by the weights: another key with the same fingerprint list cannot make it
    flipped = json.loads(json.dumps(m))
    flipped["items"][0]["label"] = (flipped["items"][0]["label"] + 1) % 3
    with pytest.raises(LearnlockError, match="does not match its authentication code"):
        check_key_matches(key, flipped)


MANIFEST_CASES = [  # (what is done to the manifest, the field the error must name)
    ("flip a label", lambda m: m["items"][0].update(label=(m["items"][0]["label"] + 1) % 3),
     "does not match its authentication code"),
    ("drop the authentication", lambda m: m.pop("authentication"), "carries no authentication code"),
    ("recipe missing", lambda m: m["authorized"].pop("recipe"), "'authorized.recipe' is missing"),
    ("unknown recipe field", lambda m: m["authorized"]["recipe"].update(warp=9), "'authorized.recipe' must be"),
    ("files=[{}]", lambda m: m.update(files=[{}]), "'files[0].file' is missing"),
    ("networks=[{}]", lambda m: m["authorized"].update(networks=[{}]), "'authorized.networks[0].fingerprint'"),
    ("authorized not an object", lambda m: m.update(authorized=[1]), "'authorized' must be an object"),
    ("settings missing", lambda m: m.pop("settings"), "'settings' is missing"),
    ("label out of range", lambda m: m["items"][1].update(label=7), "'items[1].label' must be a class index"),
    ("items not a list", lambda m: m.update(items={}), "'items' must be a non-empty list"),
    ("a code that is not hex", lambda m: m["authentication"]["macs"].update({k: "\u00e9" * 64 for k in
                                                                              m["authentication"]["macs"]}),
     "carries no authentication code"),
]


@pytest.mark.parametrize("name,edit,expect", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_damaged_or_edited_manifest_is_one_error_line(keyed_pub, capsys, name, edit, expect):
    pub, key_path, test = keyed_pub
    path = pub / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    for argv in (["train", "--authorized", str(key_path), "--data", str(pub), "--test", test],
                 ["table1", "--published", str(pub), "--authorized", str(key_path), "--test", test],
                 ["audit", str(pub), "--authorized", str(key_path), "--test", test, "--out", str(pub.parent / "a")]):
        one_error_line(capsys, cli.main(argv + ["--no-progress"]), expect)


def test_untouched_manifest_trains(keyed_pub, capsys):
    pub, key_path, test = keyed_pub
    assert cli.main(["train", "--authorized", str(key_path), "--data", str(pub), "--test", test,
                     "--no-progress"]) == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out


def cli_cases(pub, key, test, tmp):
    """(argv, the phrase of the one error line)."""
    ro = tmp / "afile"  # outputs under a file cannot be written, whoever runs the tests
    ro.write_text("not a folder")
    return [
        (["table1", "--published", pub, "--authorized", key, "--test", test, "--hackers", "cnn:abc"],
         "ARCH:SEED with an integer seed"),
        (["table1", "--published", pub, "--authorized", key, "--test", test, "--out", f"{ro}/t1"], "cannot write"),
        (["train", "--authorized", key, "--data", pub, "--out", f"{ro}/w.safetensors"], "cannot write"),
        (["train", "--authorized", key, "--data", pub], "give --test to report test accuracy or --out"),
        (["audit", pub, "--authorized", key, "--test", test, "--out", f"{ro}/a"], "cannot write"),
        (["certify", pub, "--test", test, "--arch", "cnn", "--n", "5", "--out", f"{ro}/c"], "cannot write"),
        (["evaluate", "--train", test, "--out", f"{ro}/e"], "cannot write"),
        (["evaluate", "--train", test, "--device", "foo"], "device must be auto, cpu, cuda or cuda:N"),
        (["protect", "--method", "em", "--preset", "unlearn", "--data", test, "--out", f"{tmp}/p3"],
         "unknown em preset 'unlearn'; choose one of: smoke"),
        (["evaluate", "--train", test, "--test", test, "--device", "cuda:7"], "was asked for, but this machine has"),
        (["protect", "--method", "random", "--data", test, "--per-class", "0", "--out", f"{tmp}/p0"],
         "per_class is a number of images per class >= 1"),
        (["protect", "--method", "uge", "--data", test, "--authorized", "cnn", "--key-seed", "1",
          "--key-out", f"{tmp}/t.npz", "--out", f"{tmp}/p1"], "inside the source"),
        (["protect", "--method", "uge", "--data", test, "--authorized", "cnn", "--key-seed", "1",
          "--key-out", f"{ro}/k.safetensors", "--out", f"{tmp}/p2"], "cannot write"),  # before the work
        (["audit", pub, "--authorized", key, "--test", "npz:" + str(tmp / "nothere.npz"), "--out", f"{tmp}/a2"],
         "nothere.npz"),
    ]


def test_cli_bad_input_is_one_error_line(keyed_pub, capsys, tmp_path):
    pub, key_path, test = keyed_pub
    for argv, expect in cli_cases(str(pub), str(key_path), test, tmp_path):
        one_error_line(capsys, cli.main(argv + ["--no-progress"]), expect)


def test_same_seed_same_bytes_at_a_recorded_thread_count(tmp_path):
    """README's claim: same seed, same bytes for the same versions, device and thread count, which
    every manifest records."""
    import torch

    from learnlock.protections import ProtectionContext, create_protection
    from learnlock.recipe import Recipe

    data = learnable_dataset(n_per_class=4, classes=2, size=8)
    key = NetSpec.create("cnn", 2, 3, seed=1)
    outs = []
    for run in range(2):
        prot = create_protection("uge", ProtectionContext([key], Recipe(epochs=1, batch_size=8)), epochs=1,
                                 encoder_resolution=32, diagnostics=False)
        prot.progress = False
        outs.append(prot.protect(data, tmp_path / f"run{run}"))
    a, b = (read_manifest(o) for o in outs)
    assert a == b and a["cpu_threads"] == torch.get_num_threads() and a["torch_version"] == torch.__version__
    assert all((outs[0] / it["file"]).read_bytes() == (outs[1] / it["file"]).read_bytes() for it in a["items"])


def test_outputs_respect_the_umask(tmp_path):
    import os

    from learnlock.files import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


def test_publish_warns_when_the_protection_did_almost_nothing(tmp_path, monkeypatch):
    from learnlock.data.published import load_published
    from learnlock.protections import create_protection
    from learnlock.protections.publish import warnings

    data = learnable_dataset(n_per_class=4, classes=2, size=8)
    prot = create_protection("random", rho=8 / 255)
    path = prot.protect(data, tmp_path / "pub")
    assert warnings(prot, data, prot.published_images) == []  # random noise uses its budget
    same, _ = load_published(path)  # compared with itself: no change at all
    (warning,) = warnings(prot, same, same.images)
    assert "did almost nothing" in warning and "0.00 grey levels" in warning
    monkeypatch.setattr(prot, "manifest_extra", lambda: {"converged": False})
    assert any("without reaching its stop criterion" in w for w in warnings(prot, data, prot.published_images))


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    from learnlock.data.outdir import clean_stale_temporaries

    stale = tmp_path / ".pub.tmp-0a1b2c3d"
    (stale / "images").mkdir(parents=True)
    other = tmp_path / ".other.tmp-0a1b2c3d"
    other.mkdir()
    assert clean_stale_temporaries(tmp_path / "pub") == [stale]
    assert not stale.exists() and other.exists()


def test_plots_show_one_image_per_class_and_say_abstained(tmp_path):
    import torch

    from learnlock.report.plots import first_of_each_class, image_grid
    from learnlock.scenarios.certify import CertifySettings, Certificate, certify_accuracies, plot_certificates

    assert first_of_each_class([0, 0, 1, 0, 2, 1], 8) == [0, 2, 4]
    assert first_of_each_class([2, 1, 0], 2) == [2, 1]
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    assert image_grid(x, x, [0, 0, 1, 0, 2, 1], ["a", "b", "c"], tmp_path / "grid.png").stat().st_size > 0
    s = CertifySettings(q=0.9, n=5, etas=(0.0, 0.5))  # 5 samples cannot certify the 0.9-quantile at 99%
    rows = certify_accuracies([0.1] * 5, s.q, s.sigma, s.etas, s.alpha)
    assert all(r["abstain"] for r in rows)
    cert = Certificate(s, [0.1] * 5, 0.1, rows, {}, {})
    assert plot_certificates({"surrogate": cert}, tmp_path / "c.png").stat().st_size > 0


def test_a_full_disk_while_publishing_is_one_error_line_and_leaves_nothing(keyed_pub, capsys, tmp_path, monkeypatch):
    import errno

    import learnlock.data.published as published

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(published, "_move_into_place", full)
    _, _, test = keyed_pub
    rc = cli.main(["protect", "--method", "random", "--data", test, "--out", str(tmp_path / "p"), "--no-progress"])
    one_error_line(capsys, rc, "No space left on device")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.tmp-*"))


def test_test_set_with_other_class_names_is_refused(keyed_pub, capsys, tmp_path):
    import numpy as np

    pub, key_path, _ = keyed_pub
    other = learnable_dataset(n_per_class=4, classes=3, size=8, seed=5)
    np.savez(tmp_path / "o.npz", x=other.images.permute(0, 2, 3, 1).numpy(), y=other.labels.numpy(),
             classes=np.array(["x", "y", "z"]))
    rc = cli.main(["train", "--authorized", str(key_path), "--data", str(pub), "--test", f"npz:{tmp_path / 'o.npz'}"])
    one_error_line(capsys, rc, "give a --test set with the same class names in the same order")


def test_table1_names_both_recipes_and_warns_when_they_differ(keyed_pub, capsys):
    pub, key_path, test = keyed_pub
    base = ["table1", "--published", str(pub), "--authorized", str(key_path), "--test", test, "--hackers", "cnn:1",
            "--distill", "", "--batch-size", "8", "--no-progress"]
    assert cli.main(base + ["--epochs", "1"]) == 0  # the manifest's recipe: 1 epoch, batch 8, lr 0.05
    captured = capsys.readouterr()
    assert "authorized cnn" in captured.out and "recipe tiny (1 epochs), hackers with recipe cpu (1 epochs)" in \
        captured.out and "warning" not in captured.err
    assert cli.main(base + ["--epochs", "2"]) == 0
    assert "warning: the hackers train with another recipe than the authorized network (2 vs 1 epochs" in \
        capsys.readouterr().err


def test_version_and_the_removed_epochs_spelling(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("learnlock ")
    data = learnable_dataset(n_per_class=3, classes=2, size=8)
    import numpy as np
    np.savez(tmp_path / "d.npz", x=data.images.permute(0, 2, 3, 1).numpy(), y=data.labels.numpy(),
             classes=np.array(list(data.classes)))
    rc = cli.main(["protect", "--method", "random", "--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", "3",
                   "--out", str(tmp_path / "p"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: protect --epochs was removed" in err and "--authorized-epochs" in err
    assert not (tmp_path / "p").exists()


def test_review_fixes_keys_bounds_and_the_device_choice(tmp_path, capsys):
    import os

    from learnlock import device
    from learnlock.data.manifest import change_bound
    from learnlock.protections.publish import key_paths, write_key_files

    keys = [NetSpec.create("cnn", 3, 3, seed=s) for s in (1, 2)]
    paths = key_paths(len(keys), tmp_path / "mykey", tmp_path / "pub")  # no suffix: still one file per key
    assert sorted(p.name for p in paths) == ["mykey0", "mykey1"]
    old = os.umask(0o022)
    try:
        written = write_key_files(keys, paths)
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p, _ in written)  # a key is a secret: its owner only
    assert write_key_files(keys, paths) == written  # identical files are kept
    with pytest.raises(LearnlockError, match="holds another key"):
        write_key_files(keys[::-1], paths)  # another key is never overwritten
    # the test-set check tolerates what the norm allows, never a whole grey range (OPS stores rho 1.0)
    ops = {"rho": 1.0, "source": {"shape": [3, 32, 32]}, "extra": {"norm": {"norm": "l0", "pixels": 1}}}
    assert change_bound(ops) < 1 and change_bound({"rho": 1.0, "source": {"shape": [3, 8, 8]}}) == 16.5
    data = learnable_dataset(n_per_class=3, classes=2, size=8)
    import numpy as np
    np.savez(tmp_path / "d.npz", x=data.images.permute(0, 2, 3, 1).numpy(), y=data.labels.numpy(),
             classes=np.array(list(data.classes)))
    with device.using("auto"):  # a command's --device holds for that command only
        assert cli.main(["protect", "--method", "random", "--data", f"npz:{tmp_path / 'd.npz'}", "--device", "cpu",
                         "--out", str(tmp_path / "p"), "--no-progress"]) == 0
        assert device._choice == "auto"
