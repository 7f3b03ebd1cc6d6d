"""Jobs through submitit's local executor: parallel workers, a killed job, a re-submit, records as inline;
one GPU per job; a job requeued at its time limit; a job of two tasks joining one process group;
the bench's folder guard (no fp32 and AMP cells together) and --download."""

from __future__ import annotations

import csv
import json
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
from ctxenc import launch
from ctxenc.launch import Job, run_jobs, visible_gpus

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


def cells(records: Path, marker: Path | None) -> dict:
    return {f"cell{c}": functools.partial(add_cell, str(records), c, str(marker) if c == 2 and marker else None) for c in range(4)}


@pytest.fixture
def importable(monkeypatch):
    """Job processes unpickle `tests.test_launch.add_cell`, so they need the repository on their path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
def test_local_workers_killed_job_and_resubmit_match_inline(tmp_path, importable):
    run_jobs(cells(tmp_path / "inline.csv", None), "inline", tmp_path / "jobs_inline")
    records, marker = tmp_path / "local.csv", tmp_path / "killed_once"
    jobs = cells(records, marker)

    with pytest.raises(UserError) as err:
        run_jobs(jobs, "local", tmp_path / "jobs", workers=2)
    message = str(err.value)
    assert message.startswith("1 of 4 jobs failed: job 3 of 4 (cell2, log ")
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
              "run_jobs({f: functools.partial(hold, f) for f in sys.argv[2:]}, 'local', sys.argv[1], workers=2)")
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
    run_jobs({str(i): functools.partial(seen.append, i) for i in range(3)}, "inline", tmp_path)
    assert seen == [0, 1, 2]
    with pytest.raises(ZeroDivisionError):
        run_jobs({"a": lambda: 1 / 0, "b": functools.partial(seen.append, 3)}, "inline", tmp_path)
    assert seen == [0, 1, 2]


def test_bad_launcher_options_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="unknown launcher 'ray'; valid launchers: inline, local, slurm."):
        run_jobs({}, "ray", tmp_path)
    with pytest.raises(UserError, match="workers must be at least 1"):
        run_jobs({}, "local", tmp_path, workers=0)
    with pytest.raises(UserError, match="Slurm parameters were given for the local launcher"):
        run_jobs({}, "local", tmp_path, slurm=launch.SlurmConfig(partition="gpu"))
    with pytest.raises(UserError, match=r"only Slurm jobs can be left running \(--no-wait\)"):
        run_jobs({}, "local", tmp_path, wait=False)
    with pytest.raises(UserError, match="no GPU is visible"):
        run_jobs({"a": print}, "local", tmp_path, gpus=[])


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a real Slurm would accept the job")
def test_slurm_without_sbatch_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match=r"needs Slurm \(srun, sbatch\) on PATH"):
        run_jobs({"a": functools.partial(print, 1)}, "slurm", tmp_path, slurm=launch.SlurmConfig(timeout_min=5))


@pytest.mark.slow
def test_bench_with_two_local_workers_records_what_inline_records(fmnist_root, tmp_path):
    """The real thing: a suite's cells as submitit jobs on 2 local workers give the inline run's records."""
    import pandas as pd

    from ctxenc.bench import run_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: spread\nseeds: [0, 1]\nthreads: 1\ntrain: {max_steps: 3, batch_size: 16}\n"
                     "pretexts: [{name: random}, {name: autoencoder}]\nprotocols: [{protocol: knn, k: 5}]\n")
    run_suite(suite, tmp_path / "inline", fmnist_root, progress=False)
    assert json.loads((tmp_path / "inline" / "run.json").read_text()) == {"limit": None, "amp": False, "devices": ["cpu"]}
    run_suite(suite, tmp_path / "local", fmnist_root, progress=False, launcher="local", workers=2)
    # timings, and the commit (it reads '+dirty' once the tree is edited between the two runs)
    varies = ["pretrain_seconds", "eval_seconds", "wall_seconds", "commit"]
    inline, local = (pd.read_csv(tmp_path / d / "records.csv").drop(columns=varies) for d in ("inline", "local"))
    key = ["method", "seed", "protocol", "metric"]
    pd.testing.assert_frame_equal(inline.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True))
    # A re-run finds every cell done and submits nothing.
    run_suite(suite, tmp_path / "local", fmnist_root, progress=False, launcher="local", workers=2)
    assert len(pd.read_csv(tmp_path / "local" / "records.csv")) == len(local)


def note_gpu(folder: str, name: str) -> None:
    """A job that says which GPUs it sees, and runs long enough for its neighbour to start meanwhile."""
    Path(folder, name).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    time.sleep(1)


@pytest.mark.slow
def test_local_jobs_each_get_a_gpu_in_turn(tmp_path, importable, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5e1f")  # what the launcher may hand out, as CUDA names them
    assert visible_gpus() == ["3", "GPU-5e1f"]
    jobs = {f"job{i}": functools.partial(note_gpu, str(tmp_path), f"job{i}") for i in range(4)}
    run_jobs(jobs, "local", tmp_path / "jobs", workers=2, gpus=visible_gpus())
    seen = [(tmp_path / f"job{i}").read_text() for i in range(4)]
    assert seen[:2] == ["3", "GPU-5e1f"]  # the two running at once: one GPU each
    assert sorted(seen) == ["3", "3", "GPU-5e1f", "GPU-5e1f"]
    # Without GPUs to hand out (a CPU run), a job sees what the launcher sees, not submitit's empty list.
    run_jobs({"cpu": functools.partial(note_gpu, str(tmp_path), "cpu")}, "local", tmp_path / "jobs")
    assert (tmp_path / "cpu").read_text() == "3,GPU-5e1f"


def test_visible_gpus_without_cuda_visible_devices_asks_torch(monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus() == ["0", "1"]


def test_bench_hands_the_visible_gpus_to_local_jobs_or_refuses(fmnist_root, tmp_path, monkeypatch):
    from ctxenc import bench

    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: gpus\nprotocols: [{protocol: knn, k: 5}]\n")
    given = {}
    monkeypatch.setattr(bench, "run_jobs", lambda jobs, launcher, folder, **kw: given.update(kw) or 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    bench.run_suite(suite, tmp_path / "out", fmnist_root, launcher="local", device="cuda")
    assert given["gpus"] == ["0", "1"]
    bench.run_suite(suite, tmp_path / "out", fmnist_root, launcher="local", device="cuda:1")
    assert given["gpus"] is None  # cuda:1 names a GPU of the launcher's numbering: jobs see the same GPUs
    assert json.loads((tmp_path / "out" / "run.json").read_text())["devices"] == ["cuda"]
    monkeypatch.setattr(bench, "run_jobs", run_jobs)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU to hand out: refused before any job starts
    with pytest.raises(UserError, match=r"no GPU is visible to hand out to the jobs .*; use --device cpu\.$"):
        bench.run_suite(suite, tmp_path / "out", fmnist_root, launcher="local", device="cuda")
    assert not (tmp_path / "out" / "jobs").exists()


def work_until_done(folder: str, seconds: float) -> None:
    """A cheap stand-in for a pretraining: `seconds` of work in small steps, its progress saved after
    each step (as last.pt is) and resumed from there when the job starts again."""
    progress = Path(folder, "progress")
    done = float(progress.read_text()) if progress.exists() else 0.0
    with open(Path(folder, "starts"), "a") as f:
        f.write(f"{done:.2f}\n")
    while done < seconds:
        time.sleep(0.05)
        done += 0.05
        progress.write_text(f"{done:.2f}")


def test_a_job_at_its_time_limit_is_requeued_and_resumes(tmp_path, importable, monkeypatch):
    # A 6 s limit, signalled 3 s before: the job is stopped after about 3 s of its 4 s of work.
    monkeypatch.setattr(launch, "LOCAL_TIMEOUT_MIN", 0.1)
    monkeypatch.setattr(launch, "LOCAL_SIGNAL_DELAY_S", 3)
    run_jobs({"cell": functools.partial(work_until_done, str(tmp_path), 4.0)}, "local", tmp_path / "jobs")
    starts = [float(x) for x in (tmp_path / "starts").read_text().split()]
    assert len(starts) >= 2 and starts[0] == 0 and 0 < starts[1] < 4  # requeued, and resumed where it stopped
    assert float((tmp_path / "progress").read_text()) == pytest.approx(4.0, abs=0.06)
    log = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.err"))
    assert "this job is timed-out" in log


def join_group(folder: str) -> None:
    """A job task that joins the process group its environment describes and sums the ranks over it."""
    import torch
    import torch.distributed as dist

    from ctxenc import distributed

    distributed.init("cpu")
    total = torch.tensor([float(distributed.rank())])
    dist.all_reduce(total)
    Path(folder, f"rank{os.environ['RANK']}").write_text(
        f"{os.environ['LOCAL_RANK']} {distributed.world_size()} {total.item():g} {os.environ['MASTER_PORT']}")
    distributed.close()


@pytest.mark.slow
def test_a_job_of_two_tasks_gets_a_torch_distributed_environment(tmp_path, importable):
    import submitit

    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(tasks_per_node=2, timeout_min=2)
    job = executor.submit(Job(functools.partial(join_group, str(tmp_path))))
    job.results()
    ranks = [(tmp_path / f"rank{r}").read_text().split() for r in (0, 1)]
    assert [r[:3] for r in ranks] == [["0", "2", "1"], ["1", "2", "1"]]  # local ranks 0, 1; world 2; 0 + 1 summed
    assert ranks[0][3] == ranks[1][3]  # one rendezvous port


def test_bench_refuses_to_mix_fp32_and_amp_cells(fmnist_root, tmp_path):
    from ctxenc.bench import run_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: precision\nthreads: 1\nprotocols: [{protocol: knn, k: 5}]\n")
    out, _ = run_suite(suite, tmp_path / "out", fmnist_root, progress=False)
    before = (out / "records.csv").read_text()
    with pytest.raises(UserError, match=r"holds a run made without --amp \(fp32\), this one is with --amp .*pass another --out"):
        run_suite(suite, out, fmnist_root, progress=False, amp=True)
    assert (out / "records.csv").read_text() == before
    amp_out, _ = run_suite(suite, tmp_path / "amp", fmnist_root, progress=False, amp=True)
    assert json.loads((amp_out / "run.json").read_text())["amp"] is True
    with pytest.raises(UserError, match="holds a run made with --amp"):
        run_suite(suite, amp_out, fmnist_root, progress=False)


def test_bench_download_fetches_every_split_the_suite_reads_first(fmnist_root, tmp_path, monkeypatch):
    from ctxenc import bench
    from ctxenc.cli import main

    asked = []
    real = bench.load_dataset

    def load(dataset, split, data_root=None, download=False, **kw):
        asked.append((dataset, split, download))
        return real(dataset, split, data_root, False, **kw)  # no internet here: the files are there already

    monkeypatch.setattr(bench, "load_dataset", load)
    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: fetch\nthreads: 1\npretexts: [{name: random}]\nprotocols: [{protocol: knn, k: 5}]\n")
    assert main(["bench", str(suite), "--download", "--data-root", str(fmnist_root), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert sorted(asked) == [("fashion_mnist", "test", True), ("fashion_mnist", "train", True)]


def test_a_cell_stopped_at_its_time_limit_is_requeued_and_resumes_from_last_pt(fmnist_root, tmp_path, monkeypatch):
    """A real suite cell as submitit runs it (`process_job`, in this process to spare a torch import):
    the time-limit signal lands just after its first last.pt snapshot; submitit's handler pickles the
    job again and exits to be requeued; the requeued job resumes from that snapshot and finishes."""
    import pandas as pd
    import torch
    from submitit.core.submission import process_job
    from submitit.core.utils import DelayedSubmission

    from ctxenc import bench, engine

    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: limit\nthreads: 1\ntrain: {steps: 6, batch_size: 16, checkpoint_every: 2}\n"
                     "pretexts: [{name: autoencoder}]\nprotocols: [{protocol: knn, k: 5}]\n")
    plan = bench.plan_suite(suite, tmp_path / "out", fmnist_root)
    cell = functools.partial(bench.run_cell_job, str(suite), 0, str(plan.out), str(fmnist_root), None, "cpu", False)
    folder = tmp_path / "jobs"
    folder.mkdir()
    submission = DelayedSubmission(Job(cell))
    submission.set_timeout(0.01, 3)  # a job of 0.6 s: any signal finds it at its time limit
    submission.dump(folder / "7_submitted.pkl")

    snapshots, save = [], engine.save_checkpoint

    def save_then_signal(path, state):  # the time-limit signal (USR2), just after the first snapshot
        save(path, state)
        if Path(path).name == "last.pt":
            snapshots.append(state["step"])
            if len(snapshots) == 1:
                os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setattr(engine, "save_checkpoint", save_then_signal)
    for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "7", "SUBMITIT_LOCAL_NTASKS": "1",
                       "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0", "SUBMITIT_FOLDER": str(folder)}.items():
        monkeypatch.setenv(key, value)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    try:
        with pytest.raises(SystemExit) as stopped:
            process_job(folder)
        assert stopped.value.code == 144  # the local executor's "requeue me"
        last = plan.out / "runs" / "autoencoder" / "seed0" / "last.pt"
        assert torch.load(last, weights_only=False)["step"] == 2 and not (plan.out / "records.csv").exists()
        process_job(folder)  # the requeued job: the same pickle, rewritten by the checkpoint
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert snapshots == [2, 4]  # resumed at step 2: a restart from scratch would snapshot step 2 again
    assert (folder / "7_0_result.pkl").exists() and not last.exists()
    assert torch.load(last.with_name("checkpoint.pt"), weights_only=False)["pretrain_steps"] == 6
    assert set(pd.read_csv(plan.out / "records.csv")["protocol"]) == {"knn"}
