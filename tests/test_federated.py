"""Federated UGE: the split is a partition, clients see only their shard, the published shards
are valid, the Table 9 rows are computed and cached, and the CLI."""

import json

import pytest
import torch

from conftest import learnable_dataset, write_npz
from learnlock import NetSpec, cli
from learnlock.data.published import load_published
from learnlock.errors import LearnlockError
from learnlock.recipe import Recipe
from learnlock.scenarios.federated import concat, federate, group_accuracy, parse_split, split_shards
from learnlock.protections import get_protection, list_protections
from learnlock.protections.uge import UGE
from learnlock.scenarios import Hacker

RECIPE = Recipe(name="tiny", epochs=8, batch_size=8, lr=0.05, augment="flip")


def assert_partition(shards, n):
    every = torch.cat(shards)
    assert len(every) == n and torch.equal(every.sort().values, torch.arange(n))  # each item exactly once
    for s in shards:
        assert len(s) > 0 and torch.equal(s, s.sort().values)
    for i, a in enumerate(shards):  # no shard holds another's items
        for b in shards[i + 1:]:
            assert not set(a.tolist()) & set(b.tolist())


@pytest.mark.parametrize("split", ["classes", "iid", "dirichlet:0.3", "dirichlet:100"])
@pytest.mark.parametrize("clients", [1, 2, 3])
def test_split_is_a_partition(split, clients):
    labels = torch.arange(6).repeat_interleave(7)[torch.randperm(42, generator=torch.Generator().manual_seed(1))]
    shards = split_shards(labels, 6, clients, split, seed=3)
    assert len(shards) == clients
    assert_partition(shards, len(labels))
    assert all(torch.equal(a, b) for a, b in zip(shards, split_shards(labels, 6, clients, split, seed=3)))
    if split == "classes":  # whole classes, contiguous blocks
        owned = [set(labels[s].tolist()) for s in shards]
        assert sum(len(o) for o in owned) == 6
        if clients == 2:
            assert owned == [{0, 1, 2}, {3, 4, 5}]
    if split == "iid":
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1


def test_dirichlet_concentration_controls_skew():
    labels = torch.arange(10).repeat_interleave(100)
    skew = [split_shards(labels, 10, 4, f"dirichlet:{a}", seed=0) for a in (0.1, 1000.0)]

    def max_share(shards):  # mean over clients of the largest class share in the shard
        return sum(torch.bincount(labels[s], minlength=10).max().item() / len(s) for s in shards) / len(shards)
    assert max_share(skew[0]) > 2 * max_share(skew[1]) and max_share(skew[1]) < 0.15


def test_bad_splits():
    labels = torch.arange(4).repeat_interleave(3)
    for text, msg in (("halves", "unknown split"), ("dirichlet", "needs a concentration"),
                      ("dirichlet:-1", "> 0"), ("iid:2", "takes no parameter")):
        with pytest.raises(LearnlockError, match=msg):
            split_shards(labels, 4, 2, text)
    with pytest.raises(LearnlockError, match="at most one client per class"):
        split_shards(labels, 4, 5, "classes")
    with pytest.raises(LearnlockError, match="positive count"):
        split_shards(labels, 4, 0, "iid")
    assert parse_split("dirichlet:0.5") == ("dirichlet", 0.5)


def test_group_accuracy_and_concat():
    labels = torch.tensor([0, 1, 2, 3, 3])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 3, 0]), 4).float()
    assert group_accuracy(logits, labels, 4) == pytest.approx({"first": 0.5, "second": 2 / 3, "all": 0.6})
    d = learnable_dataset(n_per_class=2, classes=3)
    both = concat([d.subset([0, 1]), d.subset([2, 3, 4, 5])])
    assert both.ids == d.ids and torch.equal(both.images, d.images)
    with pytest.raises(LearnlockError, match="do not match|does not match"):
        concat([d, learnable_dataset(n_per_class=2, classes=4)])


def test_federated_uge_end_to_end_and_resume(tmp_path, monkeypatch):
    train = learnable_dataset(n_per_class=12, classes=4, size=16)
    test = learnable_dataset(n_per_class=10, classes=4, size=16, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=7, width=8)
    shards = split_shards(train.labels, 4, 2, "classes")
    seen = []
    real = UGE.perturb

    def spy(self, data, workdir=None):  # what each client's protection is given
        seen.append(data.ids)
        return real(self, data, workdir)

    monkeypatch.setattr(UGE, "perturb", spy)
    hackers = [Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)]
    res = federate(train, test, key, shards, tmp_path / "fed", RECIPE, preset="smoke",
                   hackers=hackers, split="classes", progress=False)
    # Each client protected exactly its own shard, nothing else.
    assert seen == [tuple(train.ids[i] for i in s.tolist()) for s in shards]
    for k, s in enumerate(shards):
        pub, manifest = load_published(tmp_path / "fed" / f"client_{k}")  # sha256-verified
        clean = train.subset(s)
        assert pub.ids == clean.ids and torch.equal(pub.labels, clean.labels)
        assert (pub.images.int() - clean.images.int()).abs().max() <= round(0.04 * 255)
        assert manifest["authorized"]["networks"][0]["fingerprint"] == key.fingerprint
        assert manifest["extra"]["federated"] == {"client": k, "clients": 2, "split": "classes",
                                                  "source": clean.fingerprint()}  # a resume checks the pixels
    assert set(res["rows"]) == {"Joint", "Separate-1", "Separate-2", "Server-1", "Server-2", "Global",
                                "Normal (lenet)", "Distill (cnn)"}
    rows = res["rows"]
    assert rows["Joint"]["train_size"] == rows["Global"]["train_size"] == 48
    assert rows["Separate-1"]["train_size"] == rows["Server-2"]["train_size"] == 24
    # A client that only saw classes 0-1 cannot name classes 2-3; the joint model learns both halves.
    assert rows["Separate-1"]["second"] <= 0.1 and rows["Separate-2"]["first"] <= 0.1
    assert rows["Separate-1"]["first"] >= 0.7 and rows["Joint"]["all"] >= 0.8
    for r in rows.values():
        assert r["all"] == pytest.approx((r["first"] + r["second"]) / 2)  # equal-sized halves of the test set
    out = tmp_path / "fed"
    for f in ("federated.json", "federated.md", "federated.png", "split.json", "global.safetensors"):
        assert (out / f).stat().st_size > 0
    assert "| Server-1" in (out / "federated.md").read_text()

    # A rerun trains nothing and reports the same numbers.
    import learnlock.scenarios.federated as fed
    monkeypatch.setattr(fed.Federation, "train_cell", lambda *a, **k: pytest.fail("a cached cell was retrained"))
    again = federate(train, test, key, shards, out, RECIPE, preset="smoke", hackers=hackers,
                     split="classes", progress=False)
    assert again["rows"] == res["rows"] and len(seen) == 2
    # Another protection setting in the same folder is refused, never silently mixed.
    with pytest.raises(LearnlockError, match="another configuration"):
        federate(train, test, key, shards, out, RECIPE, preset="smoke", settings={"rho": 0.03},
                 hackers=hackers, split="classes", progress=False)
    with pytest.raises(LearnlockError, match="partition"):
        federate(train, test, key, [shards[0], shards[0]], tmp_path / "x", RECIPE, preset="smoke", progress=False)


@pytest.mark.parametrize("method", [m for m in list_protections() if get_protection(m).needs_key])
def test_federated_trains_the_issued_key(method, tmp_path, monkeypatch):
    """The server trains what each client issued, as the authorized user would: keyed's network
    (key layer + base), lock's base network on the shards unlocked with each client's LockKey."""
    import importlib

    import learnlock.scenarios.federated as fed
    from learnlock.keys import load_key

    t1 = importlib.import_module("learnlock.scenarios.authorized")  # where every authorized network is trained

    train = learnable_dataset(n_per_class=6, classes=4, size=16)
    test = learnable_dataset(n_per_class=3, classes=4, size=16, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=7, width=8)
    shards = split_shards(train.labels, 4, 2, "classes")
    trained = {}
    real = t1.fit

    def spy(model, data, recipe, **kw):  # what each server cell starts from and trains on
        trained[kw.get("desc")] = ({k: v.clone() for k, v in model.state_dict().items()}, data.images.clone())
        return real(model, data, recipe, **kw)

    monkeypatch.setattr(t1, "fit", spy)
    recipe = Recipe(name="tiny", epochs=1, batch_size=8, lr=0.05, augment="flip")
    out = tmp_path / "fed"
    res = federate(train, test, key, shards, out, recipe, method=method, preset="smoke",
                   hackers=[], split="classes", progress=False)
    issued = [load_key(out / f"client_{k}.key.safetensors") for k in range(2)]
    assert res["issued"] == [k.fingerprint for k in issued]
    published = [load_published(out / f"client_{k}")[0] for k in range(2)]
    start, images = trained["global"]
    want = issued[0].build().state_dict()
    assert start.keys() == want.keys() and all(torch.equal(start[n], want[n]) for n in want)
    if method == "keyed":  # the issued network is not the plain base network
        assert issued[0].arch == "keyed" and start.keys() != key.build().state_dict().keys()
    unlocked = torch.cat([k.prepare(p).images for k, p in zip(issued, published)])
    assert torch.equal(images, unlocked)  # the union as each client's key prepares it
    if method == "lock":  # unlocking changed the pixels: the server did not train on locked images
        assert not torch.equal(unlocked, torch.cat([p.images for p in published]))
    for k in range(2):
        assert torch.equal(trained[f"server {k + 1}"][1], issued[k].prepare(published[k]).images)
    # A rerun reads the kept keys back, trains nothing and reports the same rows.
    monkeypatch.setattr(fed.Federation, "train_cell", lambda *a, **k: pytest.fail("a cached cell was retrained"))
    again = federate(train, test, key, shards, out, recipe, method=method, preset="smoke",
                     hackers=[], split="classes", progress=False)
    assert again["rows"] == res["rows"] and again["issued"] == res["issued"]


def test_cli_federated(tmp_path, capsys):

    write_npz(tmp_path / "d.npz")
    write_npz(tmp_path / "t.npz", seed=1)
    data = f"npz:{tmp_path / 'd.npz'}"
    args = ["federated", "--data", data, "--test", f"npz:{tmp_path / 't.npz'}", "--clients", "3", "--split", "iid", "--global-arch", "cnn",
            "--global-seed", "5", "--method", "random", "--hackers", "lenet:1", "--distill", "",
            "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "fed")]
    assert cli.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "| Joint" in out and "| Server-3" in out and "| Normal (lenet)" in out
    result = json.loads((tmp_path / "fed" / "federated.json").read_text())
    assert result["method"] == "random" and sum(result["shard_sizes"]) == 48
    # Each client draws its own noise (seed + client), so no two clients share random draws.
    pubs = [load_published(tmp_path / "fed" / f"client_{k}") for k in range(3)]
    assert [m["settings"]["seed"] for _, m in pubs] == [0, 1, 2]
    from learnlock import load_dataset
    clean = load_dataset(data, "train")
    deltas = []
    for pub, _ in pubs:
        index = [clean.ids.index(i) for i in pub.ids[:8]]
        deltas.append(pub.images[:8].int() - clean.images[index].int())
    assert not torch.equal(deltas[0], deltas[1]) and not torch.equal(deltas[1], deltas[2])
    assert NetSpec.load(tmp_path / "fed" / "global.key.safetensors").fingerprint == \
        NetSpec.create("cnn", 4, 3, seed=5).fingerprint
    assert cli.main([*args[:8], "dirichlet:zero", *args[9:]]) == 2
    assert "concentration" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("user data")
    assert cli.main([*args[:-1], str(tmp_path / "other")]) == 2
    assert "not a federated run folder" in capsys.readouterr().err
    assert (tmp_path / "other" / "mine.txt").read_text() == "user data"


def test_client_probe_sees_client_signatures():
    from learnlock.scenarios.federated import client_probe

    d = learnable_dataset(n_per_class=20, classes=4)
    parts = [d.subset(range(0, 40)), d.subset(range(40, 80))]
    g = torch.Generator().manual_seed(0)

    def noisy(part, pattern):  # the part plus a noise pattern (+-6 levels)
        noise = pattern if pattern is not None else torch.randint(-6, 7, part.images.shape, generator=g)
        return part.with_images((part.images.int() + noise).clamp(0, 255).to(torch.uint8))
    signature = [torch.randint(-6, 7, parts[0].images.shape[1:], generator=g) for _ in range(2)]
    assert client_probe(parts, [noisy(p, s) for p, s in zip(parts, signature)]) >= 0.95
    assert client_probe(parts, [noisy(p, None) for p in parts]) <= 0.75  # same noise law: near chance
    assert client_probe(parts[:1], parts[:1]) is None
