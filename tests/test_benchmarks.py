"""The speed benchmarks run against today's API (a benchmark that no longer imports measures nothing)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_speed_pretrain_prints_its_table():
    out = subprocess.run([sys.executable, "benchmarks/speed_pretrain.py", "--workloads", "small,peak", "--threads", "1",
                          "--batch-size", "8", "--rounds", "1", "--steps", "1"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "| ctxenc small encoder (1x32 px, L2) |" in out.stdout and "small share of matmul peak" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
def test_ddp_benchmark_trains_the_same_model_both_ways():
    out = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "benchmarks/ddp_vs_allreduce.py",
                          "--workloads", "small", "--rounds", "1", "--steps", "1"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| small |"))
    assert float(row.split("|")[-2]) < 1e-6  # the largest parameter difference after 3 steps
