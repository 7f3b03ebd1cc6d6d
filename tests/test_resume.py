"""Interruptions: kill -9 a real pretraining or bench process, resume, and compare with a clean run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ctxenc.io import output_lock
from ctxenc.checkpoint import load_checkpoint
from ctxenc.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def ctxenc(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "ctxenc", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (it must still be running then)."""
    start = time.time()
    while not ready():
        assert proc.poll() is None, "the process ended before it could be killed"
        assert time.time() - start < timeout
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def losses(log: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k.startswith("loss") or k == "step"}
            for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_killed_and_resumed_equals_uninterrupted(fmnist_root, tmp_path):
    args = ["pretrain", "--pretext", "context_encoder", "--adversarial", "--data-root", fmnist_root, "--epochs", "5",
            "--batch-size", "16", "--checkpoint-every", "5", "--seed", "3", "--no-progress"]
    finish(ctxenc(*args, "--out", tmp_path / "clean"))

    killed = tmp_path / "killed"

    def mid_training() -> bool:  # a snapshot exists, and the run is far from its end (80 steps)
        try:
            return (killed / "last.pt").exists() and load_checkpoint(killed / "last.pt")["step"] >= 20
        except UserError:  # caught between os.replace and our read: not possible, but be safe
            return False

    kill_when(ctxenc(*args, "--out", killed), mid_training)
    assert not (killed / "checkpoint.pt").exists()
    finish(ctxenc(*args, "--out", killed, "--resume"))

    clean, resumed = load_checkpoint(tmp_path / "clean" / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert clean["model"].keys() == resumed["model"].keys()
    for key in clean["model"]:
        assert torch.equal(clean["model"][key], resumed["model"][key]), key
    assert losses(tmp_path / "clean" / "log.jsonl") == losses(killed / "log.jsonl")
    assert not (killed / "last.pt").exists()


def test_resume_refuses_a_snapshot_of_other_settings(fmnist_root, tmp_path, capsys):
    from ctxenc.cli import main

    out = tmp_path / "run"
    base = ["pretrain", "--pretext", "autoencoder", "--data-root", str(fmnist_root), "--batch-size", "16",
            "--checkpoint-every", "2", "--out", str(out), "--no-progress"]
    assert main(base + ["--max-steps", "5"]) == 0
    (out / "checkpoint.pt").rename(out / "last.pt")  # pretend the run was interrupted
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(base + ["--max-steps", "6", "--resume"]) == 2
    assert "belongs to a run with other settings" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before  # the snapshot is left as it was


SUITE = """suite: killme
seeds: [0, 1]
train: {epochs: 3, batch_size: 16, checkpoint_every: 5}
pretexts: [{name: random}, {name: autoencoder}]
protocols: [{protocol: knn, k: 5}, {protocol: linear_probe, max_iter: 10}]
"""


@pytest.mark.slow
def test_bench_killed_and_rerun_equals_clean_run(fmnist_root, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    finish(ctxenc("bench", suite, "--out", tmp_path / "clean", "--data-root", fmnist_root, "--no-progress"))

    out = tmp_path / "killed"
    snapshot = out / "runs" / "autoencoder" / "seed1" / "last.pt"
    kill_when(ctxenc("bench", suite, "--out", out, "--data-root", fmnist_root, "--no-progress"), snapshot.exists)
    partial = pd.read_csv(out / "records.csv")
    assert 0 < len(partial) < len(pd.read_csv(tmp_path / "clean" / "records.csv"))
    assert (out / ".lock").exists()  # left behind by the killed process, taken over below
    finish(ctxenc("bench", suite, "--out", out, "--data-root", fmnist_root, "--no-progress"))

    timing = ["pretrain_seconds", "eval_seconds", "wall_seconds"]
    clean = pd.read_csv(tmp_path / "clean" / "records.csv").drop(columns=timing)
    resumed = pd.read_csv(out / "records.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(clean, resumed)
    assert not (out / ".lock").exists()


def test_a_live_lock_refuses_a_second_run(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(UserError, match="another ctxenc bench .* is writing to"):
            with output_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
