"""Run a suite's cells as jobs: one after another here, in parallel local processes, or on Slurm.

A job is a picklable callable taking no arguments (a `functools.partial` of a module-level
function), typically one suite cell: pretraining plus its protocols. Jobs come named, by a name
that stays the same from one run of a command to the next (a cell's folder). `local` and `slurm`
go through `submitit` (the job launcher of the PyTorch research ecosystem), which pickles each
job into `folder`, runs it in a fresh process and keeps its stdout/stderr logs there.

Every such job runs inside `Job`, which sets up its process:
- its GPU: under `--launcher local --device cuda` each running job gets a visible GPU of its own
  (CUDA_VISIBLE_DEVICES), the least busy one, so jobs take the GPUs in turn;
- torch.distributed: a Slurm job of several tasks (`tasks_per_node` > 1) gets MASTER_ADDR,
  MASTER_PORT, RANK, WORLD_SIZE and LOCAL_RANK from submitit's JobEnvironment, so each task joins
  one process group (`ctxenc.distributed.init`);
- requeueing: Slurm signals a job (USR2) 90 s before its time limit or when it is preempted;
  submitit then pickles the same job again and requeues it, and the job resumes from what it left
  on disk (a cell: its `last.pt` snapshot and its records).

Failures are collected, not fatal: every job runs to its end, then one `UserError` names the
jobs that failed and their logs. Re-submission is the caller's business and costs nothing extra
when jobs skip completed work (suite cells skip cells whose records exist): running the same
job list again re-does only what failed.

Slurm jobs outlive the command that submitted them: `folder/submitted.json` keeps each job's Slurm
id under its name, and a later run submits only the jobs that are not queued or running (`squeue`)
and then waits for those too, or, with `wait=False`, returns once they are submitted.

Jobs that write to one shared file hold `ctxenc.io.locked(path)` around the write (an fcntl lock, which
works across processes on one machine and on NFS/Lustre with lock support).
"""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import json
import os
import signal
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import submitit
import yaml
from submitit.core.utils import FailedJobError

from ctxenc.config import brief, from_dict
from ctxenc.errors import UserError
from ctxenc.io import atomic_write_text

LAUNCHERS = ("inline", "local", "slurm")
# LocalExecutor kills a job after 2 minutes unless told otherwise; a cell may pretrain for hours.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
LOCAL_SIGNAL_DELAY_S = 30  # the USR2 before a local job's time limit (submitit's default)
# A job that reaches its time limit is requeued at most this many times (preemptions do not count):
# pretraining resumes from last.pt, but an evaluation longer than the limit starts over each time.
MAX_TIMEOUTS = 10
SLURM_TIMEOUT_MIN = 12 * 60
# squeue's states of a job that is not over (recently ended jobs are listed too, as COMPLETED, FAILED, ...).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class SlurmConfig:
    """Slurm parameters of every job of a suite (None: not asked for, the cluster's default).

    gpus_per_node: default tasks_per_node under `--device cuda` (one GPU per task), else none;
    timeout_min: the time limit of one job, 12 h by default: a cell that reaches it is requeued and
    resumes from its last.pt; array_parallelism: array tasks running at once, default `--workers`;
    tasks_per_node > 1: one process per task, training together with torch.distributed.
    """

    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = SLURM_TIMEOUT_MIN
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    tasks_per_node: int = 1

    def __post_init__(self):
        for key in ("cpus_per_task", "timeout_min", "array_parallelism", "tasks_per_node"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            raise UserError(f"gpus_per_node must be at least 0, got {self.gpus_per_node}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise UserError(f"mem_gb must be more than 0, got {self.mem_gb}")
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key) is not None and not getattr(self, key).strip():
                raise UserError(f"{key} must not be empty")


SLURM_KEYS = tuple(f.name for f in dataclasses.fields(SlurmConfig))


def slurm_config(section: dict, options: list[str], where: str, cuda: bool, workers: int) -> SlurmConfig:
    """The Slurm parameters of a run: the suite's `launcher:` section (`where` names it), overridden by
    `--slurm KEY=VALUE` options, then the defaults that depend on the run (GPUs under `cuda`,
    `workers` array tasks at once). A bad key or value is one `UserError` naming the valid keys."""
    given = {**_checked(section, where), **_checked(parse_options(options), "--slurm")}
    config = SlurmConfig(**given)
    gpus = config.gpus_per_node if config.gpus_per_node is not None else (config.tasks_per_node if cuda else None)
    return dataclasses.replace(config, gpus_per_node=gpus, array_parallelism=config.array_parallelism or workers)


def parse_options(options: list[str]) -> dict:
    """['partition=gpu', 'mem_gb=64'] -> {'partition': 'gpu', 'mem_gb': 64}: values read as YAML
    scalars, except for keys that take text (an account may be all digits)."""
    text = {f.name for f in dataclasses.fields(SlurmConfig) if f.type == "str | None"}
    given = {}
    for item in options:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--slurm takes KEY=VALUE, got {item!r}; valid keys: {', '.join(SLURM_KEYS)}.")
        try:
            given[key] = value if key in text else yaml.safe_load(value)
        except yaml.YAMLError:
            given[key] = value
    return given


def _checked(given: dict, where: str) -> dict:
    if not isinstance(given, dict):
        raise UserError(f"{where} must be a mapping of Slurm parameters, got {brief(given)}; valid keys: {', '.join(SLURM_KEYS)}.")
    for key in given:
        if key not in SLURM_KEYS:
            close = difflib.get_close_matches(str(key), SLURM_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown Slurm parameter {brief(key)} in {where}{hint}; valid keys: {', '.join(SLURM_KEYS)}.")
    try:
        from_dict(SlurmConfig, given, where)
    except UserError as err:  # the type check's sentence, or the range check's (which names no place)
        text = str(err).rstrip(".")
        raise UserError(f"{text if text.startswith(where) else f'{where}: {text}'}; valid keys: {', '.join(SLURM_KEYS)}.") from None
    return dict(given)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class Job(submitit.helpers.Checkpointable):
    """A job as submitit runs it: in its own environment, and requeued where a time limit stops it.

    env: variables set before the job starts (None: removed), e.g. its CUDA_VISIBLE_DEVICES
    (submitit's local executor hides every GPU from a job unless told otherwise). A job that Slurm
    stops at its time limit or preempts is requeued through submitit's checkpointing: the inherited
    `checkpoint` pickles this same job again, and it resumes from what it left on disk.
    """

    def __init__(self, run: Callable[[], None], env: dict[str, str | None] | None = None):
        self.run = run
        self.env = dict(env or {})

    def __call__(self) -> None:
        for key, value in {**self.env, **distributed_environment()}.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.run()


def distributed_environment() -> dict[str, str]:
    """torch.distributed's variables for this task of a submitit job of several tasks ({} for one):
    the first host is the rendezvous, on a port every task derives from the job id alike."""
    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return {}
    return {"MASTER_ADDR": env.hostnames[0], "MASTER_PORT": str(20000 + zlib.crc32(env.raw_job_id.encode()) % 20000),
            "RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.num_tasks // env.num_nodes)}


def run_jobs(jobs: dict[str, Callable[[], None]], launcher: str, folder: Path, workers: int = 2,
             slurm: SlurmConfig | None = None, gpus: list[str] | None = None, wait: bool = True) -> int:
    """Run every job (name -> job) and wait for all of them; then raise one `UserError` if any failed.

    launcher: `inline` calls each job in turn in this process (an exception propagates at once);
    `local` runs at most `workers` jobs at a time as local processes (submitit's LocalExecutor),
    each on its own GPU of `gpus` (CUDA_VISIBLE_DEVICES names) when given, else seeing the GPUs
    this process sees; `slurm` submits one Slurm job array (submitit) with the parameters `slurm`,
    leaving out jobs that an earlier run submitted and that are still queued or running, and with
    `wait` False returns once they are submitted.
    folder: where submitit keeps the pickled jobs, their results and logs (`<job id>_0_log.out/.err`).
    Returns the number of jobs left queued or running (0 unless `wait` is False).
    """
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; valid launchers: {', '.join(LAUNCHERS)}.")
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}.")
    if slurm is not None and launcher != "slurm":
        raise UserError(f"Slurm parameters were given for the {launcher} launcher; use --launcher slurm or drop them.")
    if not wait and launcher != "slurm":
        raise UserError(f"only Slurm jobs can be left running (--no-wait); {launcher} jobs end with this command.")
    if gpus is not None and not gpus and jobs:
        raise UserError("no GPU is visible to hand out to the jobs (CUDA_VISIBLE_DEVICES is empty or torch finds none); use --device cpu.")
    if not jobs:
        return 0
    if launcher == "inline":
        for job in jobs.values():
            job()
        return 0
    if launcher == "local":
        outcomes = _run_local(jobs, Path(folder), workers, gpus)
    else:
        outcomes, pending = _run_slurm(jobs, Path(folder), slurm or slurm_config({}, [], "", False, workers), wait)
        if not wait:
            return pending
    failed = [(i, name, job) for i, (name, job, bad) in enumerate(outcomes) if bad]
    if failed:
        what = "; ".join(f"job {i + 1} of {len(jobs)} ({name}, log {job.task(0).paths.stderr})" for i, name, job in failed)
        raise UserError(f"{len(failed)} of {len(jobs)} jobs failed: {what}; run the same command again to re-submit only those.")
    return 0


def _run_local(jobs: dict[str, Callable[[], None]], folder: Path, workers: int,
               gpus: list[str] | None) -> list[tuple[str, object, bool]]:
    """Keep at most `workers` local processes busy until every job has finished. -> (name, job, failed) per job."""
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUTS)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, signal_delay_s=LOCAL_SIGNAL_DELAY_S)
    names = list(jobs)
    submitted: list = [None] * len(jobs)
    failed = [False] * len(jobs)
    gpu_of: list[str | None] = [None] * len(jobs)
    pending, running = list(range(len(jobs))), []
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                if gpus:  # the GPU fewest running jobs use; the first listed on a tie, so they take turns
                    gpu_of[i] = min(gpus, key=lambda gpu: sum(gpu_of[j] == gpu for j in running))
                visible = gpu_of[i] if gpus else os.environ.get("CUDA_VISIBLE_DEVICES")
                submitted[i] = executor.submit(Job(jobs[names[i]], {"CUDA_VISIBLE_DEVICES": visible}))
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
    return list(zip(names, submitted, failed))


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
    try:  # reap it with waitpid, not Popen.wait: a Ctrl-C that lands inside Popen.poll() can leave
        os.waitpid(process.pid, 0)  # Popen's wait lock held, and wait() then blocks on the lock
    except ChildProcessError:  # already reaped
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


def _run_slurm(jobs: dict[str, Callable[[], None]], folder: Path, config: SlurmConfig,
               wait: bool) -> tuple[list[tuple[str, object, bool]], int]:
    """Submit, as one array, the jobs that are not queued or running since an earlier run; wait for all
    of them unless not `wait`. -> ((name, job, failed) per job when waited, jobs left queued or running)."""
    record = folder / "submitted.json"
    known = _read_submitted(record)
    active = _active_slurm_jobs([known[name]["job_id"] for name in jobs if name in known])
    adopted = {name: submitit.SlurmJob(folder, known[name]["job_id"], tasks=range(known[name]["tasks"]))
               for name in jobs if name in known and known[name]["job_id"] in active}
    for name in jobs:
        if name in known and name not in adopted:
            log = submitit.SlurmJob(folder, known[name]["job_id"]).paths.stderr
            print(f"Slurm job {known[name]['job_id']} ({name}) ended without finishing its work (log {log}); "
                  "submitting it again", flush=True)
    todo = [name for name in jobs if name not in adopted]
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError:  # submitit found no srun
        raise UserError("the slurm launcher needs Slurm (srun, sbatch) on PATH; use --launcher local on a single machine.") from None
    executor.update_parameters(
        name="ctxenc", timeout_min=config.timeout_min, gpus_per_node=config.gpus_per_node, cpus_per_task=config.cpus_per_task,
        mem_gb=config.mem_gb, tasks_per_node=config.tasks_per_node, slurm_partition=config.partition,
        slurm_account=config.account, slurm_qos=config.qos, slurm_constraint=config.constraint,
        slurm_array_parallelism=config.array_parallelism)
    fresh = []
    try:
        if todo:
            with executor.batch():
                fresh = [executor.submit(Job(jobs[name])) for name in todo]
    except FileNotFoundError:
        raise UserError("the slurm launcher needs Slurm (srun, sbatch) on PATH; use --launcher local on a single machine.") from None
    except FailedJobError as err:  # sbatch refused the jobs: its own words say why
        raise UserError(f"sbatch refused the jobs ({' '.join(str(err).split())}); check --slurm and the suite's launcher: section.") from None
    known.update({name: {"job_id": job.job_id, "tasks": config.tasks_per_node} for name, job in zip(todo, fresh)})
    atomic_write_text(record, json.dumps(known, indent=1) + "\n")
    submitted = {**adopted, **dict(zip(todo, fresh))}
    for name in jobs:
        origin = "submitted" if name in todo else "already queued"
        print(f"Slurm job {submitted[name].job_id} ({name}): {origin}", flush=True)
    if not wait:
        return [], len(submitted)
    outcomes = []
    for name in jobs:
        submitted[name].wait()
        outcomes.append((name, submitted[name], _failed(submitted[name])))
    return outcomes, 0


def _read_submitted(record: Path) -> dict[str, dict]:
    """{job name: {"job_id": Slurm id, "tasks": tasks per job}} of the jobs earlier runs submitted."""
    if not record.is_file():
        return {}
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{record} is damaged; remove it once no job of this folder is queued or running (squeue).") from None


def _active_slurm_jobs(job_ids: list[str]) -> set[str]:
    """Those of `job_ids` that Slurm lists as queued or running (array tasks as ID_TASK, as submitit names them)."""
    if not job_ids:
        return set()
    command = ["squeue", "--noheader", "--array", f"--user={getpass.getuser()}", "--format=%i %T"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise UserError(f"squeue could not say which jobs of this folder are queued ({' '.join(str(detail).split())}); "
                        "run the same command again once Slurm answers.") from None
    active = {fields[0] for fields in map(str.split, listed.splitlines()) if len(fields) >= 2 and fields[1] in ACTIVE_STATES}
    return set(job_ids) & active


def _failed(job) -> bool:
    """Whether a finished submitit job (any of its tasks) raised, was killed or timed out."""
    try:
        job.results()
    except Exception:  # submitit's FailedJobError / UncompletedJobError, or the job's own exception
        return True
    return False
