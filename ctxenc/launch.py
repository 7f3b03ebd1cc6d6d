"""Run a suite's cells as jobs: one after another here, in parallel local processes, or on Slurm.

Each job is a picklable callable taking no arguments (a `functools.partial` of a module-level
function), typically one suite cell: pretraining plus its protocols. `local` and `slurm` go
through `submitit` (the job launcher of the PyTorch research ecosystem), which pickles each
callable into `folder`, runs it in a fresh process and keeps its stdout/stderr logs there.

Failures are collected, not fatal: every job runs to its end, then one `UserError` names the
jobs that failed and their logs. Re-submission is the caller's business and costs nothing extra
when jobs skip completed work (suite cells skip cells whose records exist): running the same
job list again re-does only what failed.

Jobs that write to one shared file hold `ctxenc.io.locked(path)` around the write (an fcntl lock, which
works across processes on one machine and on NFS/Lustre with lock support).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from ctxenc.errors import UserError

LAUNCHERS = ("inline", "local", "slurm")
# LocalExecutor kills a job after 2 minutes unless told otherwise; a cell may pretrain for hours.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


def run_jobs(jobs: list[Callable[[], None]], launcher: str, folder: Path, workers: int = 2,
             slurm: dict | None = None) -> None:
    """Run every job and wait for all of them; then raise one `UserError` if any failed.

    launcher: `inline` calls each job in turn in this process (an exception propagates at once);
    `local` runs at most `workers` jobs at a time as local processes (submitit's LocalExecutor);
    `slurm` submits one Slurm job array (submitit's AutoExecutor) with `slurm` as its parameters
    (e.g. {"slurm_partition": "gpu", "timeout_min": 600, "gpus_per_node": 1}); `workers` caps how
    many array tasks run at once unless `slurm_array_parallelism` is given.
    folder: where submitit keeps the pickled jobs, their results and logs (`<job id>_0_log.out/.err`).
    """
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; valid launchers: {', '.join(LAUNCHERS)}.")
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}.")
    if slurm and launcher != "slurm":
        raise UserError(f"Slurm parameters were given for the {launcher} launcher; use --launcher slurm or drop them.")
    if launcher == "inline":
        for job in jobs:
            job()
        return
    if launcher == "local":
        outcomes = _run_local(jobs, Path(folder), workers)
    else:
        outcomes = _run_slurm(jobs, Path(folder), workers, slurm or {})
    failed = [(i, job) for i, (job, bad) in enumerate(outcomes) if bad]
    if failed:
        what = "; ".join(f"job {i + 1} of {len(jobs)} ({describe(jobs[i])}, log {job.paths.stderr})" for i, job in failed)
        raise UserError(f"{len(failed)} of {len(jobs)} jobs failed: {what}; run the same command again to re-submit only those.")


def _run_local(jobs: list[Callable[[], None]], folder: Path, workers: int) -> list[tuple[object, bool]]:
    """Keep at most `workers` local processes busy until every job has finished. -> (job, failed) per job."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    submitted: list = [None] * len(jobs)
    failed = [False] * len(jobs)
    pending, running = list(range(len(jobs))), []
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                submitted[i] = executor.submit(jobs[i])
                running.append(i)
            for i in [i for i in running if submitted[i].done()]:
                running.remove(i)
                finished = len(jobs) - len(pending) - len(running)
                # A job killed before it wrote a result (OOM, kill -9) failed: asking result() would wait
                # 15 s for the file first (submitit's allowance for slow shared disks, not needed here).
                failed[i] = not submitted[i].paths.result_pickle.exists() or _failed(submitted[i])
                state = "failed" if failed[i] else "done"
                print(f"job {i + 1} of {len(jobs)} {state} ({finished} of {len(jobs)} finished)", flush=True)
            time.sleep(0.5)
    except BaseException:  # Ctrl-C or SIGTERM: local jobs end with their launcher (a re-run continues them)
        for i in running:
            _kill(submitted[i])
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return list(zip(submitted, failed))


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _kill(job) -> None:
    """Kill a local job: its submitit controller and every process under it. (No polite SIGINT: a bench
    started with SIGINT ignored, as `nohup ... &` from a script starts it, passes that on to its jobs.)"""
    process = getattr(job, "_process", None)
    if process is None:
        return
    for pid in [*_descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # reap it, but never block: a Ctrl-C that lands inside Popen.poll() can leave Popen's wait lock
        process.wait(timeout=10)  # held, and a plain wait() then waits forever
    except subprocess.TimeoutExpired:
        pass


def _descendants(pid: int) -> list[int]:
    """The processes under `pid`, from /proc (empty where there is none)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _run_slurm(jobs: list[Callable[[], None]], folder: Path, workers: int, params: dict) -> list[tuple[object, bool]]:
    """Submit all jobs as one array and wait for every task. -> (job, failed) per job."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError:  # submitit found no srun
        raise UserError("the slurm launcher needs Slurm (srun, sbatch) on PATH; use --launcher local on a single machine.") from None
    try:
        executor.update_parameters(**{"slurm_array_parallelism": workers, **params})
    except (TypeError, ValueError, AssertionError) as err:
        raise UserError(f"bad Slurm parameters {sorted(params)}: {err}.") from None
    try:
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
    except FileNotFoundError:
        raise UserError("the slurm launcher needs Slurm (srun, sbatch) on PATH; use --launcher local on a single machine.") from None
    for job in submitted:
        job.wait()
    return [(job, _failed(job)) for job in submitted]


def _failed(job) -> bool:
    """Whether a finished submitit job raised, was killed or timed out."""
    try:
        job.result()
    except Exception:  # submitit's FailedJobError / UncompletedJobError, or the job's own exception
        return True
    return False


def describe(job: Callable) -> str:
    """A short human name for a job: 'cell(demo, seed=1)' for a partial, else its qualified name."""
    if isinstance(job, functools.partial):
        args = [repr(a) for a in job.args] + [f"{k}={v!r}" for k, v in job.keywords.items()]
        text = f"{describe(job.func)}({', '.join(args)})"
        return text if len(text) <= 120 else text[:117] + "..."
    return getattr(job, "__qualname__", type(job).__name__)
