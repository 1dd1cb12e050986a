import hashlib
import json
import os
import stat

import pytest
import torch

from conftest import learnable_dataset, write_folder
from learnlock.data import ImageDataset, list_datasets, load_dataset
from learnlock.data import published
from learnlock.data.published import (
    FORMAT, check_out_dir, load_published, read_manifest, write_published,
)
from learnlock.errors import LearnlockError


def folder_source(tmp_path, mode="RGB"):
    write_folder(tmp_path / "src", per_class=3, mode=mode)
    return load_dataset(f"folder:{tmp_path / 'src'}")


def flipped(ds):
    return 255 - ds.images


def publish(ds, out, images=None, **kw):
    kw = {"method": "test", "rho": 8 / 255, "settings": {"a": 1}, "seed": 0, **kw}
    return write_published(out, ds, flipped(ds) if images is None else images, **kw)


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_registered():
    assert "published" in list_datasets()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_round_trip_folder_source(tmp_path, mode):
    ds = folder_source(tmp_path, mode)
    out = publish(ds, tmp_path / "pub")
    back = load_dataset(f"published:{out}")
    assert torch.equal(back.images, flipped(ds))
    assert torch.equal(back.labels, ds.labels)
    assert back.ids == ds.ids and back.classes == ds.classes
    assert back.source == f"published:{out}"
    assert back.images.shape[1] == (3 if mode == "RGB" else 1)
    assert (out / "images" / "ant" / "000.png").is_file()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        f"images/{i.rsplit('.', 1)[0]}.png" for i in ds.ids
    )


def test_round_trip_index_ids_grey(tmp_path):
    ds = learnable_dataset(n_per_class=3, classes=2, size=8, channels=1)
    x = ds.images.clone()
    x[0, 0, 0, 0] = 0
    x[1, 0, 0, 0] = 255
    out = publish(ds, tmp_path / "pub", images=x)
    back, manifest = load_published(out)
    assert torch.equal(back.images, x) and torch.equal(back.labels, ds.labels) and back.ids == ds.ids
    first = manifest["items"][0]
    assert first["file"] == f"images/{ds.classes[ds.labels[0]]}/{ds.ids[0]}.png"


def test_manifest_fields_and_files(tmp_path):
    ds = folder_source(tmp_path)
    auth = {"networks": [{"arch": "resnet18", "fingerprint": "0" * 64}], "recipe": {"epochs": 3}}
    out = publish(ds, tmp_path / "pub", protected=[0, 2], authorized=auth,
                  extra={"note": "x"}, files={"authorized.safetensors": b"weights"})
    m = read_manifest(out)
    assert list(m)[:2] == ["format", "format_version"] and m["format"] == FORMAT and m["format_version"] == 1
    for key in ("method", "rho", "settings", "seed", "source", "classes", "items", "protected_fraction",
                "authorized", "extra", "files", "learnlock_version", "git_commit", "torch_version",
                "cpu_threads"):
        assert key in m
    assert m["method"] == "test" and m["rho"] == 8 / 255 and m["settings"] == {"a": 1} and m["seed"] == 0
    assert m["source"] == {"spec": ds.source, "size": len(ds), "shape": [3, 6, 8]}
    assert m["classes"] == list(ds.classes)
    assert m["authorized"] == auth and m["extra"] == {"note": "x"}
    assert [it["protected"] for it in m["items"]] == [i in (0, 2) for i in range(len(ds))]
    assert m["protected_fraction"] == 2 / len(ds)
    for it, sid, y in zip(m["items"], ds.ids, ds.labels.tolist()):
        assert it["source_id"] == sid and it["label"] == y
        assert it["sha256"] == hashlib.sha256((out / it["file"]).read_bytes()).hexdigest()
    assert m["files"] == [{"file": "authorized.safetensors", "sha256": hashlib.sha256(b"weights").hexdigest()}]
    assert (out / "authorized.safetensors").read_bytes() == b"weights"
    (out / "authorized.safetensors").write_bytes(b"other")
    with pytest.raises(LearnlockError, match="authorized.safetensors: sha256 mismatch"):
        load_published(out)


def test_same_input_same_bytes(tmp_path):
    ds = folder_source(tmp_path)
    a = tree_bytes(publish(ds, tmp_path / "a"))
    b = tree_bytes(publish(ds, tmp_path / "b"))
    assert a == b and "manifest.json" in a


def test_tampered_png_is_detected(tmp_path):
    ds = folder_source(tmp_path)
    out = publish(ds, tmp_path / "pub")
    f = out / "images" / "bee" / "001.png"
    data = bytearray(f.read_bytes())
    data[-20] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(LearnlockError, match=r"images/bee/001.png: sha256 mismatch, the file was modified; "
                                             "the published dataset is not intact"):
        load_dataset(f"published:{out}")


def test_missing_file_is_detected(tmp_path):
    ds = folder_source(tmp_path)
    out = publish(ds, tmp_path / "pub")
    (out / "images" / "cat" / "002.png").unlink()
    with pytest.raises(LearnlockError, match=r"images/cat/002.png is missing"):
        load_dataset(f"published:{out}")


def test_existing_out_refused_and_overwrite(tmp_path):
    ds = folder_source(tmp_path)
    out = publish(ds, tmp_path / "pub")
    with pytest.raises(LearnlockError, match="exists; choose another `out` or pass `overwrite`"):
        publish(ds, out)
    with pytest.raises(LearnlockError, match="exists; choose another `out` or pass `overwrite`"):
        check_out_dir(out)
    publish(ds, out, images=ds.images, overwrite=True)
    assert torch.equal(load_dataset(f"published:{out}").images, ds.images)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_never_replaces_a_foreign_folder_or_file(tmp_path):
    ds = folder_source(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(LearnlockError, match="not a published dataset"):
        publish(ds, tmp_path / "mine", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LearnlockError, match="not a folder"):
        publish(ds, tmp_path / "file", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x" and (tmp_path / "file").read_text() == "x"
    (tmp_path / "empty").mkdir()
    publish(ds, tmp_path / "empty", overwrite=True)
    assert read_manifest(tmp_path / "empty")["format"] == FORMAT


def test_path_under_a_file_is_unwritable(tmp_path):
    ds = folder_source(tmp_path)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(LearnlockError, match="cannot write to .*; choose another `out`"):
        check_out_dir(tmp_path / "plain" / "sub" / "pub")
    with pytest.raises(LearnlockError, match="cannot write to .*; choose another `out`"):
        publish(ds, tmp_path / "plain" / "pub")


def test_read_only_parent_is_unwritable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (test_path_under_a_file covers this)")
        with pytest.raises(LearnlockError, match="cannot write to .*; choose another `out`"):
            check_out_dir(ro / "pub")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_never_writes_into_or_over_the_source(tmp_path):
    ds = folder_source(tmp_path)
    for out in (tmp_path / "src" / "pub", tmp_path / "src" / "ant" / "pub", tmp_path / "src", tmp_path):
        with pytest.raises(LearnlockError, match="source dataset"):
            publish(ds, out, overwrite=True)
    pub = publish(ds, tmp_path / "pub")
    again = load_dataset(f"published:{pub}")
    with pytest.raises(LearnlockError, match="source dataset"):
        publish(again, pub, overwrite=True)
    assert len(list((tmp_path / "src").rglob("*.png"))) == len(ds)


def test_stem_collision_names_both(tmp_path):
    ds = ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 0]), ("a",),
                      ("a/x.jpg", "a/x.png"), source="test")
    with pytest.raises(LearnlockError, match=r"'a/x.jpg' and 'a/x.png'.*images/a/x.png"):
        publish(ds, tmp_path / "pub", images=ds.images)
    assert not (tmp_path / "pub").exists()


def test_bad_images_refused(tmp_path):
    ds = folder_source(tmp_path)
    with pytest.raises(LearnlockError, match="uint8"):
        publish(ds, tmp_path / "pub", images=ds.float_images())
    with pytest.raises(LearnlockError, match="shape"):
        publish(ds, tmp_path / "pub", images=ds.images[:-1])
    with pytest.raises(LearnlockError, match="JSON"):
        publish(ds, tmp_path / "pub", settings={"f": object()})
    assert not (tmp_path / "pub").exists()


def test_test_split_refused(tmp_path):
    out = publish(folder_source(tmp_path), tmp_path / "pub")
    with pytest.raises(LearnlockError, match="a published dataset is a training set; evaluate on the clean test"):
        load_dataset(f"published:{out}", "test")


def test_per_class(tmp_path):
    ds = learnable_dataset(n_per_class=5, classes=3, size=8)
    out = publish(ds, tmp_path / "pub")
    full = load_dataset(f"published:{out}")
    part = load_dataset(f"published:{out}", per_class=2, seed=3)
    ref = full.per_class(2, seed=3)
    assert torch.equal(part.images, ref.images) and part.ids == ref.ids and torch.equal(part.labels, ref.labels)


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    ds = folder_source(tmp_path)
    real, calls = published.png_bytes, []

    def flaky(arr):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk on fire")
        return real(arr)

    monkeypatch.setattr(published, "png_bytes", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        publish(ds, tmp_path / "pub")
    assert not (tmp_path / "pub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    monkeypatch.setattr(published, "png_bytes", real)
    old = publish(ds, tmp_path / "pub")
    before = tree_bytes(old)
    calls.clear()
    monkeypatch.setattr(published, "png_bytes", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        publish(ds, old, images=ds.images, overwrite=True)
    assert tree_bytes(old) == before  # the old dataset survives a failed overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pub", "src"]


def test_read_manifest_errors(tmp_path):
    with pytest.raises(LearnlockError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(LearnlockError, match="manifest.json is missing"):
        read_manifest(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(LearnlockError, match="not valid JSON"):
        read_manifest(d)
    (d / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(LearnlockError, match="format 'other'"):
        read_manifest(d)
    (d / "manifest.json").write_text(json.dumps({"format": FORMAT, "format_version": 99}))
    with pytest.raises(LearnlockError, match="newer than this learnlock reads.*upgrade"):
        read_manifest(d)
