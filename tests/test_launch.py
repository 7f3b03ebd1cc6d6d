"""Jobs through submitit's local executor: parallel workers, a killed job, a re-submit, records as inline."""

from __future__ import annotations

import csv
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxenc.errors import UserError
from ctxenc.io import locked
from ctxenc.launch import describe, run_jobs

ROOT = Path(__file__).resolve().parents[1]


def add_cell(records: str, cell: int, kill_marker: str | None = None) -> None:
    """A stand-in for a suite cell: append its rows unless they are there (cells skip completed
    work). With `kill_marker`, the first run dies by SIGKILL before writing (an OOM kill, a
    preempted node), as its marker file records."""
    if kill_marker is not None and not os.path.exists(kill_marker):
        Path(kill_marker).touch()
        os.kill(os.getpid(), 9)
    with locked(records):
        done = Path(records).exists() and any(row[0] == str(cell) for row in csv.reader(open(records)))
        if not done:
            with open(records, "a", newline="") as f:
                csv.writer(f).writerows([[cell, metric, cell * 10 + i] for i, metric in enumerate(("acc", "loss"))])


def read_rows(path: Path) -> list[list[str]]:
    return sorted(csv.reader(open(path)))


def cells(records: Path, marker: Path | None) -> list:
    return [functools.partial(add_cell, str(records), c, str(marker) if c == 2 and marker else None) for c in range(4)]


@pytest.fixture
def importable(monkeypatch):
    """Job processes unpickle `tests.test_launch.add_cell`, so they need the repository on their path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_local_workers_killed_job_and_resubmit_match_inline(tmp_path, importable):
    run_jobs(cells(tmp_path / "inline.csv", None), "inline", tmp_path / "jobs_inline")
    records, marker = tmp_path / "local.csv", tmp_path / "killed_once"
    jobs = cells(records, marker)

    with pytest.raises(UserError) as err:
        run_jobs(jobs, "local", tmp_path / "jobs", workers=2)
    message = str(err.value)
    assert message.startswith("1 of 4 jobs failed: job 3 of 4 (add_cell(")
    log = Path(re.search(r", log (\S+)\);", message).group(1))
    assert log.parent == tmp_path / "jobs" and log.name.endswith("_log.err")
    assert marker.exists()
    assert sorted({row[0] for row in read_rows(records)}) == ["0", "1", "3"]  # the others finished

    run_jobs(jobs, "local", tmp_path / "jobs", workers=2)  # re-submit: only cell 2 has work left
    assert read_rows(records) == read_rows(tmp_path / "inline.csv")
    assert len(read_rows(records)) == 8


def hold(pid_file: str) -> None:
    """A long job that says where it runs."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig, preexec", [(signal.SIGTERM, None), (signal.SIGINT, None), (signal.SIGTERM, ignore_sigint)],
                         ids=["SIGTERM", "Ctrl-C", "SIGTERM, started like nohup ... & (SIGINT ignored)"])
def test_stopping_the_launcher_stops_its_local_jobs(tmp_path, importable, sig, preexec):
    pid_files = [tmp_path / f"job{i}.pid" for i in range(2)]
    script = ("import functools, sys; from ctxenc.launch import run_jobs; from tests.test_launch import hold; "
              "run_jobs([functools.partial(hold, f) for f in sys.argv[2:]], 'local', sys.argv[1], workers=2)")
    launcher = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "jobs"), *map(str, pid_files)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    deadline = time.time() + 60
    while not all(f.exists() and f.read_text() for f in pid_files) and time.time() < deadline:
        time.sleep(0.2)
    pids = [int(f.read_text()) for f in pid_files]
    launcher.send_signal(sig)
    launcher.wait(timeout=30)
    assert launcher.returncode != 0
    deadline = time.time() + 15
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


def test_inline_runs_in_order_and_raises_at_once(tmp_path):
    seen = []
    run_jobs([functools.partial(seen.append, i) for i in range(3)], "inline", tmp_path)
    assert seen == [0, 1, 2]
    with pytest.raises(ZeroDivisionError):
        run_jobs([lambda: 1 / 0, functools.partial(seen.append, 3)], "inline", tmp_path)
    assert seen == [0, 1, 2]


def test_bad_launcher_options_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="unknown launcher 'ray'; valid launchers: inline, local, slurm."):
        run_jobs([], "ray", tmp_path)
    with pytest.raises(UserError, match="workers must be at least 1"):
        run_jobs([], "local", tmp_path, workers=0)
    with pytest.raises(UserError, match="Slurm parameters were given for the local launcher"):
        run_jobs([], "local", tmp_path, slurm={"slurm_partition": "gpu"})


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a real Slurm would accept the job")
def test_slurm_without_sbatch_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match=r"needs Slurm \(srun, sbatch\) on PATH"):
        run_jobs([functools.partial(print, 1)], "slurm", tmp_path, slurm={"timeout_min": 5})


def test_describe_names_partials():
    assert describe(functools.partial(add_cell, "r.csv", 2)) == "add_cell('r.csv', 2)"
    assert describe(functools.partial(add_cell, "r.csv", cell=2)) == "add_cell('r.csv', cell=2)"


def test_bench_with_two_local_workers_records_what_inline_records(fmnist_root, tmp_path):
    """The real thing: a suite's cells as submitit jobs on 2 local workers give the inline run's records."""
    import pandas as pd

    from ctxenc.bench import run_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: spread\nseeds: [0, 1]\nthreads: 1\ntrain: {max_steps: 3, batch_size: 16}\n"
                     "pretexts: [{name: random}, {name: autoencoder}]\nprotocols: [{protocol: knn, k: 5}]\n")
    run_suite(suite, tmp_path / "inline", fmnist_root, progress=False)
    run_suite(suite, tmp_path / "local", fmnist_root, progress=False, launcher="local", workers=2)
    varies = ["pretrain_seconds", "eval_seconds", "wall_seconds"]
    inline, local = (pd.read_csv(tmp_path / d / "records.csv").drop(columns=varies) for d in ("inline", "local"))
    key = ["method", "seed", "protocol", "metric"]
    pd.testing.assert_frame_equal(inline.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True))
    # A re-run finds every cell done and submits nothing.
    run_suite(suite, tmp_path / "local", fmnist_root, progress=False, launcher="local", workers=2)
    assert len(pd.read_csv(tmp_path / "local" / "records.csv")) == len(local)
