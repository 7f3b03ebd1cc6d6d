"""Where a result came from: code version, library, threads, CPU, and the device and precision it
ran in, recorded beside every run."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch


# What decides a number: the package, the protocols and the suites. Commits that touch only
# results/ or docs (a suite's own records, the README) leave the recorded version unchanged, so a
# long run continued after them still reads as one version of the code.
CODE_PATHS = ("ctxenc", "eval", "benchmarks", "pyproject.toml")


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The last git commit that changed the code (CODE_PATHS), `+dirty` when the code has
    uncommitted changes; '' outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        sha = git("log", "-1", "--format=%h", "--abbrev=12", "--", *CODE_PATHS)
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
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


def device_fields(device: str | torch.device, amp: bool) -> dict[str, str | bool]:
    """{device: 'cpu' or 'cuda', gpu: the GPU's name ('' on the CPU), amp: mixed precision or not}."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return {"device": device.type, "gpu": gpu, "amp": bool(amp)}
