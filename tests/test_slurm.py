"""The slurm executor (learnlock.slurm) through submitit's local executor (subprocesses, no SLURM):
the serial run's results, a killed cell that fails the run clearly, and reruns that submit only
the missing cells."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from conftest import ONE, learnable_dataset  # noqa: E402
from learnlock.cells import CellCache  # noqa: E402
from learnlock.cli import main  # noqa: E402
from learnlock.errors import LearnlockError  # noqa: E402
from learnlock.jobs import Workers  # noqa: E402
from learnlock.models import NetSpec  # noqa: E402
from learnlock.scenarios import Hacker, authorized_vs_hackers, evaluate_nets  # noqa: E402
from learnlock.slurm import Slurm  # noqa: E402

HERE = Slurm(cluster="local", gpus=0, time_min=5)  # jobs as subprocesses of this machine, on its CPU


@pytest.fixture
def submitted(monkeypatch):
    """The number of cells each map_array call submitted, in order; the jobs can import this test
    module (the killed cell's function lives here)."""
    import submitit

    counts = []
    original = submitit.AutoExecutor.map_array

    def spy(self, fn, *iterables):
        counts.append(len(iterables[0]))
        return original(self, fn, *iterables)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", spy)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    return counts


def without(rows, key):
    return [{k: v for k, v in r.items() if k != key} for r in rows]


def test_evaluate_on_slurm_matches_serial_and_resubmits_only_missing(tmp_path, submitted):
    train, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    serial = evaluate_nets(train, test, ["cnn"], [0, 1], ONE, out_dir=tmp_path / "a", progress=False)
    cluster = evaluate_nets(train, test, ["cnn"], [0, 1], ONE, out_dir=tmp_path / "b", progress=False, executor=HERE)
    assert without(cluster, "wall_time_s") == without(serial, "wall_time_s") and submitted == [2]
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert without(a["rows"], "wall_time_s") == without(b["rows"], "wall_time_s")
    assert len(list((tmp_path / "b" / "slurm").glob("*/*_log.err"))) == 2  # each cell's logs stay
    assert not list((tmp_path / "b" / "slurm").glob("**/*.pkl"))  # shared inputs and pickles are cleaned up
    # everything cached: nothing is submitted; one cell lost: only that cell is
    evaluate_nets(train, test, ["cnn"], [0, 1], ONE, out_dir=tmp_path / "b", progress=False, executor=HERE)
    assert submitted == [2]
    lost = sorted((tmp_path / "b" / "cells" / "evaluate").glob("*.json"))[0]
    lost.unlink()
    again = evaluate_nets(train, test, ["cnn"], [0, 1], ONE, out_dir=tmp_path / "b", progress=False, executor=HERE)
    assert submitted == [2, 1] and lost.exists()
    assert without(again, "wall_time_s") == without(serial, "wall_time_s")


def test_table1_cells_on_slurm_match_serial(tmp_path, submitted):
    """The authorized net's weights come back as distill's teacher, and a rerun reads them here."""
    train, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    key = NetSpec.create("cnn", 4, 3, seed=5)
    hackers = [Hacker("retrain", "lenet", 1), Hacker("distill", "cnn", 1)]
    serial = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, progress=False)
    kw = dict(progress=False, cache=CellCache(tmp_path / "cells"), executor=HERE, folder=tmp_path / "slurm")
    cluster = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, **kw)
    assert {k: v for k, v in cluster.items() if k != "wall_s"} == \
        {**{k: v for k, v in serial.items() if k != "wall_s"}, "reused": 0}
    assert submitted == [2, 1]  # the authorized net and retrain, then distill with the trained teacher
    again = authorized_vs_hackers(train, test, [key], ONE, hackers, ONE, **kw)
    assert submitted == [2, 1] and again["reused"] == 3 and again["hackers"] == serial["hackers"]


def test_audit_on_slurm_matches_serial(tmp_path, submitted):
    """The teacher travels in the shared file; the report is the serial run's."""
    from learnlock.protections import create_protection
    from learnlock.scenarios import audit

    clean, test = learnable_dataset(n_per_class=8), learnable_dataset(n_per_class=4, seed=1)
    published = clean.with_images(create_protection("random", rho=8 / 255, classwise=True, seed=0).apply(clean),
                                  source="classwise")
    kw = dict(attacks=["retrain", "distill"], nets=["cnn"], seeds=[0], recipe=ONE, clean=clean,
              key=NetSpec.create("cnn", 4, 3, seed=7), progress=False, log=lambda m: None)
    serial = audit(published, test, out_dir=tmp_path / "a", **kw)
    cluster = audit(published, test, out_dir=tmp_path / "b", executor=HERE, **kw)
    a, b = (json.loads((tmp_path / d / "audit.json").read_text()) for d in "ab")
    assert json.dumps(without_wall(a)) == json.dumps(without_wall(b)) and submitted == [3]
    assert json.dumps(without_wall(serial.to_dict())) == json.dumps(without_wall(cluster.to_dict()))


def without_wall(obj):
    if isinstance(obj, dict):
        return {k: without_wall(v) for k, v in obj.items() if k != "wall_s"}
    if isinstance(obj, list):
        return [without_wall(v) for v in obj]
    return obj


def dies_once(shared, i):
    """A cell that caches itself; cell 1 kills its own process midway the first time (a lost node)."""
    cache, marks = shared

    def compute():
        if i == 1 and not (marks / "died").exists():
            (marks / "died").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"i": i, "square": i * i}

    return cache.run("toy", {"i": i}, compute)


def test_a_killed_cell_fails_the_run_and_the_rerun_submits_only_it(tmp_path, submitted):
    cache, done = CellCache(tmp_path / "cells"), []
    with pytest.raises(LearnlockError, match=r"1 cell\(s\) failed on the cluster") as failure:
        with Workers(1, (cache, tmp_path), HERE, tmp_path / "slurm") as pool:
            pool.map(dies_once, [(0,), (1,), (2,)], on_done=lambda i, r: done.append(i))
    message = str(failure.value)
    assert "cell 1 (job " in message and "ended without a result" in message
    logs = [Path(w) for w in message.replace(" and ", " ").split() if w.endswith(("_log.err", "_log.out"))]
    assert len(logs) == 2 and all(p.exists() for p in logs)  # the message names the cell's log files
    assert sorted(done) == [0, 2] and cache.get("toy", {"i": 1}) is None  # the others finished and cached
    with Workers(1, (cache, tmp_path), HERE, tmp_path / "slurm") as pool:
        results = pool.map(dies_once, [(0,), (1,), (2,)])
        assert pool.cluster.submitted == 1
    assert results == [{"i": i, "square": i * i} for i in range(3)] and submitted == [3, 1]


def test_slurm_without_submitit_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails as if not installed
    with pytest.raises(LearnlockError, match=r"pip install learnlock\[slurm\]"):
        Workers(1, None, "slurm", tmp_path)
    assert main(["evaluate", "--train", "fashion-mnist", "--executor", "slurm", "--slurm-gpus", "0",
                 "--out", str(tmp_path / "e")]) == 2
    assert "error: the slurm executor needs submitit: pip install learnlock[slurm]" in capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [
    ([], "yet each cell asks for 1 GPU(s); run the command itself on a GPU node"),  # a CPU process, GPU cells
    (["--slurm-gpus", "0", "--slurm-param", "account=abc"], "--slurm-param are submitit's parameters"),
    (["--slurm-gpus", "0", "--slurm-time", "0"], "--slurm-time must be a whole number >= 1"),
    (["--slurm-gpus", "0"], "this machine has no srun or sbatch on its PATH: run the command on a node of the SLURM"),
])
def test_slurm_settings_are_checked_before_any_data(tmp_path, monkeypatch, capsys, flags, says):
    monkeypatch.setattr("learnlock.slurm.shutil.which", lambda command: None)  # not a SLURM node
    assert main(["audit", str(tmp_path / "missing"), "--executor", "slurm", *flags, "--out", str(tmp_path / "o")]) == 2
    assert says in capsys.readouterr().err


def test_every_command_with_cells_takes_the_executor():
    from learnlock.cli import build_parser

    parser = build_parser()
    for command in (["evaluate", "--train", "x"], ["table1", "--published", "p", "--authorized", "k"],
                    ["audit", "p", "--out", "o"], ["federated", "--data", "x", "--global-arch", "cnn", "--out", "o"]):
        args = parser.parse_args([*command, "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-param",
                                  "slurm_qos=high", "--jobs", "8"])
        assert (args.executor, args.partition, args.gpus, args.time_min, args.params, args.jobs) == \
            ("slurm", "gpu", 1, 240, ["slurm_qos=high"], 8)


def test_the_job_array_asks_slurm_for_what_the_settings_say(tmp_path, monkeypatch):
    """What sbatch receives, with a fake sbatch and srun on PATH (no cluster): one GPU per cell, the
    partition, time and memory, at most `max_running` at once, and the extra parameters."""
    from learnlock.slurm import Cells

    bin_dir, got = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {got}\necho "Submitted batch job 4242"\n')
    for command in ("srun", "sacct", "scancel"):
        (bin_dir / command).write_text("#!/bin/sh\nexit 0\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = Slurm(partition="gpu", time_min=30, mem_gb=16, max_running=2, params={"slurm_account": "abc"})
    settings.check_here()
    jobs = Cells(settings, None, tmp_path / "slurm")._executor().map_array(len, [[1], [2], [3]])
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]
    text = got.read_text()
    for line in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--time=30",
                 "--mem=16GB", "--array=0-2%2", "--account=abc", "--job-name=learnlock"):
        assert f"#SBATCH {line}\n" in text, line
