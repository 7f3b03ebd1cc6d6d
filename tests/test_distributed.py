"""torchrun with 2 processes (gloo, CPU; gradients averaged by PyTorch's DistributedDataParallel) gives the
loss curve of one process with the same global batch, with one optimizer and with two (generator and
discriminator, each its own reducer)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def curve(log: Path, key: str = "loss_rec") -> list[float]:
    return [json.loads(line)[key] for line in log.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
# Random crops are drawn for the global batch too; the adversarial run also checks the discriminator's reducer.
@pytest.mark.parametrize("extra", [[], ["--augment", "--adversarial"]], ids=["plain", "augment+adversarial"])
def test_two_processes_match_one(fmnist_root, tmp_path, extra):
    args = ["pretrain", "--pretext", "context_encoder", "--data-root", str(fmnist_root), "--batch-size", "32",
            "--max-steps", "8", "--seed", "1", "--no-progress", "--log-every", "1", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "ctxenc", *args, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "ctxenc", *args, "--out", str(tmp_path / "two")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr
    assert multi.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    one, two = curve(tmp_path / "one" / "log.jsonl"), curve(tmp_path / "two" / "log.jsonl")
    assert len(one) == len(two) >= 1
    # Same data, masks and averaged gradients; only BatchNorm sees half a batch per process.
    for a, b in zip(one, two):
        assert abs(a - b) <= 0.02 * a  # measured: under 1%
    if "--adversarial" in extra:  # the discriminator's own reducer: its loss follows too
        for a, b in zip(curve(tmp_path / "one" / "log.jsonl", "loss_d"), curve(tmp_path / "two" / "log.jsonl", "loss_d")):
            assert abs(a - b) <= 0.02 * a
