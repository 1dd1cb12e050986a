"""`jobs`: cells trained in worker processes give the serial run's results, cache and resume."""

import json
from pathlib import Path

import pytest

from conftest import ONE, learnable_dataset
from learnlock.errors import LearnlockError
from learnlock.jobs import Workers
from learnlock.models import NetSpec
from learnlock.protections import create_protection
from learnlock.scenarios import Hacker, authorized_vs_hackers, audit, evaluate_nets, federate, load_cells, split_shards



def without(obj, *keys):
    """obj with the named (wall-time) fields removed at every depth."""
    if isinstance(obj, dict):
        return {k: without(v, *keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without(v, *keys) for v in obj]
    return obj


ORPHANS = """
import os, sys, time
from learnlock.jobs import Workers

def cell(shared, i):
    open(os.path.join(sys.argv[1], f"{i}-{os.getpid()}"), "w").close()
    time.sleep(120)

if __name__ == "__main__":
    with Workers(2) as pool:
        pool.map(cell, [(0,), (1,)])
"""


def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    """A killed run (SIGKILL, no cleanup) must not leave its workers training on as orphans."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphans.py"
    script.write_text(ORPHANS)
    marks = tmp_path / "marks"
    marks.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(marks)])
    try:
        deadline = time.time() + 120
        while len(list(marks.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        pids = [int(p.name.split("-")[1]) for p in marks.iterdir()]
        assert len(pids) == 2, "the workers never started"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.time() + 15
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:  # do not leave them behind for the next test either
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"


def test_jobs_must_be_positive():
    with pytest.raises(LearnlockError, match="jobs` must be"):
        Workers(0)


def test_evaluate_with_jobs_matches_serial_and_resumes(tmp_path):
    train, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    nets = ["cnn", NetSpec.create("lenet", 4, 3, seed=3)]
    serial = evaluate_nets(train, test, nets, [0, 1], ONE, out_dir=tmp_path / "a", progress=False)
    parallel = evaluate_nets(train, test, nets, [0, 1], ONE, out_dir=tmp_path / "b", progress=False, jobs=2)
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert without(a, "wall_time_s") == without(b, "wall_time_s")
    assert without(serial, "wall_time_s") == without(parallel, "wall_time_s")
    # a killed run that finished one cell: the rerun keeps that cell as cached (a marked accuracy)
    evaluate_nets(train, test, ["cnn"], [0], ONE, out_dir=tmp_path / "c", progress=False)
    (cell,) = (tmp_path / "c" / "cells" / "evaluate").glob("*.json")
    saved = json.loads(cell.read_text())
    saved["result"]["accuracy"] = -1.0
    cell.write_text(json.dumps(saved))
    resumed = evaluate_nets(train, test, nets, [0, 1], ONE, out_dir=tmp_path / "c", progress=False, jobs=2)
    assert resumed[0]["accuracy"] == -1.0
    assert without(resumed[1:], "wall_time_s") == without(serial[1:], "wall_time_s")


def test_audit_with_jobs_matches_serial_and_resumes(tmp_path):
    clean = learnable_dataset(n_per_class=8)
    published = clean.with_images(create_protection("random", rho=8 / 255, classwise=True, seed=0).apply(clean),
                                  source="classwise")
    test = learnable_dataset(n_per_class=4, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=7)
    kw = dict(attacks=["retrain", "iss-grayscale", "distill"], nets=["cnn", "lenet"], seeds=[0], recipe=ONE,
              clean=clean, key=key, progress=False)
    serial = audit(published, test, out_dir=tmp_path / "a", log=lambda m: None, **kw)
    logs = []
    parallel = audit(published, test, out_dir=tmp_path / "b", log=logs.append, jobs=2, **kw)
    a, b = (json.loads((tmp_path / d / "audit.json").read_text()) for d in "ab")
    assert json.dumps(without(a, "wall_s")) == json.dumps(without(b, "wall_s"))  # cells, summary, table
    assert json.dumps(without(serial.to_dict(), "wall_s")) == json.dumps(without(parallel.to_dict(), "wall_s"))
    a, b = ([without(c, "wall_s", "file") for c in load_cells(tmp_path / d)] for d in "ab")
    assert a == b and len(a) == 8  # clean and 3 attacks, 2 nets: the same inputs (one key) and results
    # a killed run: one cell is missing; the rerun trains that cell alone and leaves the others' files
    cells = sorted((tmp_path / "b" / "cells").glob("*/*.json"))
    Path(next(c["file"] for c in load_cells(tmp_path / "b") if (c["row"], c["net"]) == ("iss-grayscale", "lenet"))).unlink()
    stamps = {p: p.stat().st_mtime_ns for p in cells if p.exists()}
    logs.clear()
    again = audit(published, test, out_dir=tmp_path / "b", log=logs.append, jobs=2, **kw)
    assert [m for m in logs if "cached" not in m and not m.startswith("authorized")] == [
        m for m in logs if m.startswith("iss-grayscale lenet seed 0")]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert json.dumps(without(again.to_dict(), "wall_s")) == json.dumps(without(serial.to_dict(), "wall_s"))


def test_table1_cells_with_jobs_match_serial():
    train, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=5)
    hackers = [Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)]
    serial = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False)
    parallel = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False, jobs=2)
    assert without(serial, "wall_s") == without(parallel, "wall_s")


def test_federated_with_jobs_matches_serial(tmp_path):
    train, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=7, width=8)
    shards = split_shards(train.labels, 4, 2, "classes")
    kw = dict(method="random", preset=None, hackers=[Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)],
              split="classes", progress=False)
    serial = federate(train, test, key, shards, tmp_path / "a", ONE, **kw)
    parallel = federate(train, test, key, shards, tmp_path / "b", ONE, jobs=2, **kw)
    assert json.dumps(without(serial.to_dict(), "wall_s", "protect_wall_s")) == \
        json.dumps(without(parallel.to_dict(), "wall_s", "protect_wall_s"))
    for name in ("global.safetensors", "client_1/manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    cells = {d: {p.name: without(json.loads(p.read_text())["result"], "wall_s")
                 for p in (tmp_path / d / "cells" / "federated").glob("*.json")} for d in "ab"}
    assert len(cells["a"]) == 8 and cells["a"] == cells["b"]  # the same cells, under the same keys
