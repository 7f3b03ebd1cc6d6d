"""`ctxenc bench --launcher slurm` against stand-ins for sbatch, squeue, sacct, scontrol and srun
(tests/fake_slurm, first on PATH): the #SBATCH lines made from a suite's launcher: section and from
--slurm, bad parameters, --no-wait and the later runs that collect, and a waiting run whose job the
stand-in cluster runs through the generated script."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import submitit
from submitit.core.submission import process_job

from ctxenc.bench import run_suite
from ctxenc.cli import main

FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"
# Two cells (seeds 0 and 1) that are quick to run: no pretraining, a kNN probe.
SUITE = "suite: tiny\nthreads: 1\nseeds: [0, 1]\npretexts: [{name: random}]\nprotocols: [{protocol: knn, k: 5}]\n"


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Path:
    """The stand-in cluster's state folder: jobs/N.sh (what sbatch got), queue (what squeue lists)."""
    state = tmp_path / "slurm"
    state.mkdir()
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    submitit.SlurmJob.watcher.clear()  # job ids restart at 1 in every test
    return state


def write_suite(tmp_path: Path, text: str = SUITE) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def sbatch_lines(cluster: Path, job: int) -> list[str]:
    return [line for line in (cluster / "jobs" / f"{job}.sh").read_text().splitlines() if line.startswith("#SBATCH")]


def submitted(out: Path) -> dict[str, str]:
    return {name: job["job_id"] for name, job in json.loads((out / "jobs" / "submitted.json").read_text()).items()}


def run_on_node(out: Path, job_id: str, monkeypatch) -> None:
    """What a node does with Slurm job `job_id` (ID or ARRAY_TASK): `python -u -m submitit.core._submit
    OUT/jobs` with the job's SLURM_* variables; here in this process, which spares a torch import."""
    array, _, task = job_id.partition("_")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    with monkeypatch.context() as m:
        m.setenv("SUBMITIT_EXECUTOR", "slurm")
        m.setenv("SUBMITIT_FOLDER", str(out / "jobs"))  # process_job sets it; the context restores it
        m.setenv("SLURM_JOB_ID", str(1000 + int(task)) if task else array)
        for key in ("SLURM_NTASKS", "SLURM_JOB_NUM_NODES"):
            m.setenv(key, "1")
        for key in ("SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID"):
            m.setenv(key, "0")
        if task:
            m.setenv("SLURM_ARRAY_JOB_ID", array)
            m.setenv("SLURM_ARRAY_TASK_ID", task)
        try:
            process_job(out / "jobs")
        finally:
            for sig, handler in handlers.items():  # submitit's requeue handlers stay with the job
                signal.signal(sig, handler)


def test_sbatch_lines_from_the_suite_and_from_the_command_line(cluster, tmp_path, fmnist_root, capsys):
    suite = write_suite(tmp_path, SUITE + "launcher: {partition: gpu, mem_gb: 32, timeout_min: 600, account: '0123'}\n")
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--launcher", "slurm", "--no-wait", "--device", "cuda", "--slurm", "timeout_min=90",
                 "--slurm", "cpus_per_task=8", "--slurm", "qos=high", "--out", str(out), "--data-root", str(fmnist_root)]) == 0
    lines = sbatch_lines(cluster, 1)
    print("\n".join(lines))  # the example in the closing note (pytest -s)
    for line in ("--partition=gpu", "--mem=32GB", "--account=0123",  # from the suite
                 "--time=90", "--cpus-per-task=8", "--qos=high",  # from --slurm, which wins over the suite's timeout_min
                 "--gpus-per-node=1", "--ntasks-per-node=1",  # defaults of a GPU job
                 "--array=0-1%2",  # one array of the two cells, --workers 2 at once
                 "--signal=USR2@90", "--job-name=ctxenc"):
        assert f"#SBATCH {line}" in lines
    assert f"-m submitit.core._submit {out / 'jobs'}" in (cluster / "jobs" / "1.sh").read_text()
    assert submitted(out) == {"runs/random/seed0": "1_0", "runs/random/seed1": "1_1"}
    stdout = capsys.readouterr().out
    assert "Slurm job 1_0 (runs/random/seed0): submitted" in stdout and "2 Slurm job(s) queued or running" in stdout
    assert not (out / "records.csv").exists() and not (out / "report.md").exists()

    # Two tasks per job: one GPU each by default; on the CPU, no GPU line at all; no suite section: a 12 h limit.
    assert main(["bench", str(write_suite(tmp_path, SUITE)), "--launcher", "slurm", "--no-wait", "--slurm", "tasks_per_node=2",
                 "--slurm", "array_parallelism=1", "--out", str(tmp_path / "cpu"), "--data-root", str(fmnist_root)]) == 0
    lines = sbatch_lines(cluster, 2)
    assert {"#SBATCH --ntasks-per-node=2", "#SBATCH --array=0-1%1", "#SBATCH --time=720"} <= set(lines)
    assert not any("gpus" in line or "partition" in line for line in lines)
    assert main(["bench", str(suite), "--launcher", "slurm", "--no-wait", "--device", "cuda", "--slurm", "tasks_per_node=2",
                 "--out", str(tmp_path / "gpu2"), "--data-root", str(fmnist_root)]) == 0
    assert "#SBATCH --gpus-per-node=2" in sbatch_lines(cluster, 3)


@pytest.mark.parametrize("suite_extra, args, message", [
    ("", ["--slurm", "partiton=gpu"], "unknown Slurm parameter 'partiton' in --slurm (did you mean 'partition'?); valid keys: partition, gpus_per_node,"),
    ("", ["--slurm", "mem_gb=lots"], "--slurm: mem_gb must be a number or null, got 'lots'; valid keys: partition,"),
    ("", ["--slurm", "tasks_per_node=0"], "--slurm: tasks_per_node must be at least 1, got 0; valid keys: partition,"),
    ("", ["--slurm", "gpu"], "--slurm takes KEY=VALUE, got 'gpu'; valid keys: partition,"),
    ("launcher: {gpus_per_node: two}\n", [], "suite.yaml: gpus_per_node must be a whole number or null, got 'two'; valid keys: partition,"),
    ("launcher: {nodes: 2}\n", [], "unknown Slurm parameter 'nodes' in launcher of"),
])
def test_bad_slurm_parameters_are_one_sentence_naming_the_valid_keys(cluster, tmp_path, fmnist_root, capsys, suite_extra, args, message):
    suite = write_suite(tmp_path, SUITE + suite_extra)
    assert main(["bench", str(suite), "--launcher", "slurm", "--out", str(tmp_path / "o"), "--data-root", str(fmnist_root), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "tasks_per_node." in err
    assert not (cluster / "jobs").exists()  # nothing submitted


def test_a_job_sbatch_refuses_is_one_sentence_in_its_words(cluster, tmp_path, fmnist_root, capsys):
    assert main(["bench", str(write_suite(tmp_path)), "--launcher", "slurm", "--slurm", "partition=refused",
                 "--out", str(tmp_path / "o"), "--data-root", str(fmnist_root)]) == 2
    err = capsys.readouterr().err
    # submitit echoes sbatch's own line first; then ctxenc's one sentence, no traceback
    assert err.splitlines()[-1].startswith("ctxenc: error: sbatch refused the jobs (sbatch: error: invalid partition "
                                           "specified: refused); check --slurm") and "Traceback" not in err


def test_slurm_options_need_the_slurm_launcher(cluster, tmp_path, fmnist_root, capsys):
    suite = write_suite(tmp_path, SUITE + "launcher: {partition: gpu}\n")  # a suite's section does not bind other launchers
    base = ["bench", str(suite), "--out", str(tmp_path / "o"), "--data-root", str(fmnist_root), "--launcher", "local"]
    assert main([*base, "--slurm", "partition=gpu"]) == 2
    assert "--slurm sets parameters of Slurm jobs, but the launcher is local; add --launcher slurm" in capsys.readouterr().err
    assert main([*base, "--no-wait"]) == 2
    assert "--no-wait leaves Slurm jobs running after the command ends, but the launcher is local" in capsys.readouterr().err


def test_no_wait_then_later_runs_collect_and_submit_only_what_is_missing(cluster, tmp_path, fmnist_root, monkeypatch, capsys):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    bench = ["bench", str(suite), "--launcher", "slurm", "--no-wait", "--out", str(out), "--data-root", str(fmnist_root), "--no-progress"]
    assert main(bench) == 0
    assert submitted(out) == {"runs/random/seed0": "1_0", "runs/random/seed1": "1_1"}

    # The cluster runs seed 0; seed 1 is still running when the command is run again: nothing new is submitted.
    run_on_node(out, "1_0", monkeypatch)
    (cluster / "queue").write_text("1_0 COMPLETED\n1_1 RUNNING\n")
    capsys.readouterr()
    assert main(bench) == 0
    assert sorted(p.name for p in (cluster / "jobs").iterdir()) == ["1.sh"]
    stdout = capsys.readouterr().out
    assert "Slurm job 1_1 (runs/random/seed1): already queued" in stdout and "1 Slurm job(s) queued or running" in stdout
    assert set(pd.read_csv(out / "records.csv")["seed"]) == {0} and not (out / "report.md").exists()
    assert "--array" in (cluster / "squeue.args").read_text()  # array tasks listed one by one, as submitit names them

    # Seed 1's job ended without its records (killed, failed): the next run submits it alone, as job 2.
    (cluster / "queue").write_text("1_1 FAILED\n")
    assert main(bench) == 0
    assert "Slurm job 1_1 (runs/random/seed1) ended without finishing its work" in capsys.readouterr().out
    assert submitted(out) == {"runs/random/seed0": "1_0", "runs/random/seed1": "2"}
    assert not any(line.startswith("#SBATCH --array") for line in sbatch_lines(cluster, 2))

    # Once it has run, the same command finds every record, submits nothing and writes the report.
    run_on_node(out, "2", monkeypatch)
    (cluster / "queue").write_text("")
    assert main(bench) == 0
    assert sorted(p.name for p in (cluster / "jobs").iterdir()) == ["1.sh", "2.sh"]
    assert "wrote" in capsys.readouterr().out and (out / "report.md").is_file()
    inline, _ = run_suite(suite, tmp_path / "inline", fmnist_root, progress=False)
    varies = ["pretrain_seconds", "eval_seconds", "wall_seconds"]
    slurm_rows, inline_rows = (pd.read_csv(d / "records.csv").drop(columns=varies).sort_values(["seed", "metric"])
                               .reset_index(drop=True) for d in (out, inline))
    pd.testing.assert_frame_equal(slurm_rows, inline_rows)


def test_a_waiting_run_collects_what_the_generated_script_ran(cluster, tmp_path, fmnist_root, capsys):
    """The stand-in sbatch runs the script it is given, as a node would (bash, srun, submitit), and the
    waiting bench collects the job's records and writes the report."""
    (cluster / "run").touch()
    suite, out = write_suite(tmp_path, SUITE.replace("seeds: [0, 1]", "seeds: [0]")), tmp_path / "out"
    assert main(["bench", str(suite), "--launcher", "slurm", "--out", str(out), "--data-root", str(fmnist_root), "--no-progress"]) == 0
    assert set(pd.read_csv(out / "records.csv")["seed"]) == {0} and (out / "report.md").is_file()
    assert "[tiny] knn on fashion_mnist, random seed 0" in (out / "jobs" / "1_0_log.out").read_text()
