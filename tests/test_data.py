import gzip
import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_folder
from learnlock.data import ImageDataset, list_datasets, load_dataset
from learnlock.data import fashion_mnist
from learnlock.errors import LearnlockError


def test_registry_lists_specs():
    assert {"fashion-mnist", "cifar10", "cifar100", "folder", "npz"} <= set(list_datasets())
    with pytest.raises(LearnlockError, match="unknown dataset 'imagenet'.*folder"):
        load_dataset("imagenet")


def test_folder_exact_pixels_labels_ids(tmp_path):
    truth = write_folder(tmp_path / "d")
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.classes == ("ant", "bee", "cat")
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (12, 3, 6, 8)
    assert list(ds.ids) == sorted(truth)
    for i, rel in enumerate(ds.ids):
        arr, label = truth[rel]
        assert torch.equal(ds.images[i], torch.from_numpy(arr).permute(2, 0, 1))
        assert ds.labels[i].item() == label


def test_folder_grey_and_split_dirs(tmp_path):
    write_folder(tmp_path / "d" / "train", mode="L", per_class=3)
    truth = write_folder(tmp_path / "d" / "test", mode="L", per_class=2, seed=1)
    ds = load_dataset(f"folder:{tmp_path / 'd'}", "test")
    assert ds.images.shape == (6, 1, 6, 8)
    arr, _ = truth[ds.ids[0]]
    assert torch.equal(ds.images[0, 0], torch.from_numpy(arr[:, :, 0]))
    assert len(load_dataset(f"folder:{tmp_path / 'd'}", "train")) == 9


def test_per_class_subset_is_seeded_and_balanced(tmp_path):
    write_folder(tmp_path / "d", per_class=6)
    a = load_dataset(f"folder:{tmp_path / 'd'}", per_class=2, seed=3)
    b = load_dataset(f"folder:{tmp_path / 'd'}", per_class=2, seed=3)
    c = load_dataset(f"folder:{tmp_path / 'd'}", per_class=2, seed=4)
    assert a.ids == b.ids and torch.equal(a.images, b.images)
    assert a.ids != c.ids
    assert torch.bincount(a.labels).tolist() == [2, 2, 2]
    # The folder loader picks files before decoding; it must agree with subsetting in memory.
    full = load_dataset(f"folder:{tmp_path / 'd'}")
    assert full.per_class(2, seed=3).ids == a.ids
    with pytest.raises(LearnlockError, match="fewer than per_class=7"):
        load_dataset(f"folder:{tmp_path / 'd'}", per_class=7)


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(LearnlockError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    write_folder(tmp_path / "d")
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(LearnlockError, match=r"empty holds no images"):
        load_dataset(f"folder:{tmp_path / 'd'}")


def test_folder_corrupt_and_truncated(tmp_path):
    write_folder(tmp_path / "d")
    bad = tmp_path / "d" / "bee" / "001.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(LearnlockError, match=r"bee/001.png: corrupt"):
        load_dataset(f"folder:{tmp_path / 'd'}")
    write_folder(tmp_path / "e", size=(32, 32))
    good = tmp_path / "e" / "cat" / "002.png"
    good.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(LearnlockError, match=r"cat/002.png: corrupt"):
        load_dataset(f"folder:{tmp_path / 'e'}")


def test_folder_mixed_sizes_and_channels(tmp_path):
    write_folder(tmp_path / "d")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "d" / "cat" / "zzz.png")
    with pytest.raises(LearnlockError, match=r"mixed image sizes: cat/zzz.png is 9x9"):
        load_dataset(f"folder:{tmp_path / 'd'}")
    write_folder(tmp_path / "e")
    Image.fromarray(np.zeros((6, 8), np.uint8), "L").save(tmp_path / "e" / "bee" / "zzz.png")
    with pytest.raises(LearnlockError, match=r"mixed channel counts: bee/zzz.png has 1"):
        load_dataset(f"folder:{tmp_path / 'e'}")


def test_npz_roundtrip_and_errors(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "ok.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    ds = load_dataset(f"npz:{tmp_path / 'ok.npz'}")
    assert torch.equal(ds.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == y.tolist() and ds.classes == ("a", "b", "c")

    np.savez(tmp_path / "float.npz", x=x.astype(np.float32) / 255, y=y)
    with pytest.raises(LearnlockError, match="field 'x' is float32, must be uint8"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "range.npz", x=x, y=np.array([0, 1, 5, 1, 0]), classes=np.array(["a", "b", "c"]))
    with pytest.raises(LearnlockError, match=r"labels in 'y' span \[0, 5\] but there are 3 classes"):
        load_dataset(f"npz:{tmp_path / 'range.npz'}")
    np.savez(tmp_path / "count.npz", x=x, y=y[:4])
    with pytest.raises(LearnlockError, match="5 images in 'x' but 4 labels"):
        load_dataset(f"npz:{tmp_path / 'count.npz'}")
    np.savez(tmp_path / "nox.npz", y=y)
    with pytest.raises(LearnlockError, match="missing array 'x'"):
        load_dataset(f"npz:{tmp_path / 'nox.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(LearnlockError, match="not a readable .npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_dataset_checks_labels_range():
    with pytest.raises(LearnlockError, match=r"labels must lie in \[0, 1\]"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ("a", "b"), ("0", "1"))
    with pytest.raises(LearnlockError, match="images must be uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ("a", "b"), ("0", "1"))


def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def write_fmnist(root, n=20, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, (img, lab) in fashion_mnist.FILES.items():
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        (root / img[0]).write_bytes(gzip.compress(idx_bytes(x)))
        (root / lab[0]).write_bytes(gzip.compress(idx_bytes(y)))
        data[split] = (x, y)
    return data


def test_fashion_mnist_from_local_dir(tmp_path):
    data = write_fmnist(tmp_path)
    ds = load_dataset(f"fashion-mnist:{tmp_path}", "test")
    x, y = data["test"]
    assert ds.images.shape == (20, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(x))
    assert ds.labels.tolist() == y.tolist()
    assert ds.classes[0] == "t-shirt" and len(ds.classes) == 10


def test_fashion_mnist_truncated(tmp_path):
    write_fmnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5]))
    with pytest.raises(LearnlockError, match="truncated IDX"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_download_through_local_url(tmp_path):
    """The real download code, pointed at a file:// mirror, with md5 checks."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_fmnist(mirror)
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    files = {s: tuple((name, md5(mirror / name)) for name, _ in pair)
             for s, pair in fashion_mnist.FILES.items()}
    dest = fashion_mnist.download_fashion_mnist(tmp_path / "cache", mirror.as_uri() + "/", files)
    assert (dest / "train-images-idx3-ubyte.gz").read_bytes() == (mirror / "train-images-idx3-ubyte.gz").read_bytes()
    assert len(load_dataset(f"fashion-mnist:{dest}")) == 20
    bad = {s: tuple((name, "0" * 32) for name, _ in pair) for s, pair in files.items()}
    with pytest.raises(LearnlockError, match="md5 mismatch"):
        fashion_mnist.download_fashion_mnist(tmp_path / "cache2", mirror.as_uri() + "/", bad)
    assert not list((tmp_path / "cache2").glob("*.gz"))  # nothing half-written kept


def write_cifar10(root, n=6):
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f, protocol=2)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        with open(root / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y}, f, protocol=2)
        batches[name] = (x, y)
    return batches


def test_cifar10_from_release_dir(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", "train")
    assert ds.images.shape == (30, 3, 32, 32) and ds.classes[1] == "automobile"
    x, y = batches["data_batch_2"]
    assert torch.equal(ds.images[6:12], torch.from_numpy(x).reshape(6, 3, 32, 32))
    assert ds.labels[6:12].tolist() == y
    assert len(load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", "test")) == 6


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_cifar_refuses_code_in_pickles(tmp_path):
    write_cifar10(tmp_path / "c")
    with open(tmp_path / "c" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(LearnlockError, match="refusing to load posix.system|refusing to load os.system"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", "test")


def test_bad_split():
    with pytest.raises(LearnlockError, match="split must be one of"):
        load_dataset("fashion-mnist", "val")
