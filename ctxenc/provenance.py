"""Where a result came from: code version, library, threads and CPU, recorded beside every run."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The git commit of the ctxenc source tree, `+dirty` when it has uncommitted changes; '' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        # results/ is excluded: a suite's own records.csv changes while it runs.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict[str, str | int]:
    """{commit, torch, threads, cpu} of this process, now."""
    return {"commit": _commit(), "torch": str(torch.__version__), "threads": torch.get_num_threads(), "cpu": cpu_model()}
