"""Suites: a YAML grid of pretext x seed x protocol, run cell by cell into `records.csv`.

A suite file (see benchmarks/demo.yaml, benchmarks/paper_table2.yaml):

    suite: demo
    dataset: fashion_mnist                        # evaluation data (and pretraining data by default),
                                                  # or {name: fashion_scenes, size: 32, ...}
    pretrain_dataset: stl10                       # optional: pretrain elsewhere ...
    pretrain_split: train+unlabeled               # ... on this split (default: its train split)
    encoder: {name: small}
    seeds: [0, 1]
    train: {steps: 2000, batch_size: 64}         # TrainConfig fields: the same budget for every pretext
    pretrain_steps: [0, 500, 2000]                # optional: a pretraining-length sweep (overrides train.steps)
    pretexts:                                     # {name: NAME, **that pretext's options}
      - {name: random}
      - {name: context_encoder, mask: random_region}
    protocols:                                    # a name, a YAML file, or a mapping; a mapping
      - eval/linear_probe.yaml                    # may name its own `dataset` and a `label`
      - {protocol: knn, k: 20, dataset: cifar10}
      - {protocol: segmentation, label: segmentation_frozen, mode: frozen}
    report: {paper: table2, columns: [...], comparisons: [...]}   # see ctxenc/results/report.py
    launcher: {partition: gpu, timeout_min: 720, mem_gb: 32}    # Slurm parameters under --launcher slurm
                                                  # (`ctxenc.launch.SlurmConfig`; --slurm KEY=VALUE overrides)

Every pretext row gets its label from the pretext (every option off its default is in it), and
a suite whose rows share a label is refused before any work, as is a report section naming a
protocol or method the suite does not run. A suite has no `limit:` key (a plumbing check is the command-line mode `--limit`, below).
Cells whose records exist are skipped and an interrupted pretraining resumes from its snapshot,
so a re-run continues where a killed one ended. A lock file keeps a second run off the same
output folder while the first is alive. `run.json` records the run's --limit, --amp and device
types, and a run with another --limit or --amp is refused the folder (its cells would reuse
checkpoints and records made otherwise).
`--limit N` runs every pretext and protocol on N images per split, for the first seed only, with
3 training steps and evaluators shortened as each protocol's registration says, into its own folder, so a long
suite is checked end to end in about a minute; its records carry the limit in their `limit` column,
and bench says so in one console line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ctxenc import distributed
from ctxenc.config import brief, from_dict, read_yaml
from ctxenc.data import dataset_info, dataset_name, dataset_spec, dataset_tasks, eval_splits, load_dataset, pretrain_split
from ctxenc.encoders import create_encoder, default_input_size
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.evaluation import check_protocol_fits, evaluate, resolve_protocol
from ctxenc.evaluators import PROTOCOLS
from ctxenc.io import atomic_write_text, check_writable_folder, output_lock
from ctxenc.launch import run_jobs, slurm_config, visible_gpus
from ctxenc.pretext import PretextSpec, pretext_spec
from ctxenc.results.records import read_records, replace_records

LIMIT_TRAIN_STEPS = 3


@dataclass(frozen=True)
class Suite:
    suite: str
    dataset: str | dict = "fashion_mnist"
    pretrain_dataset: str | dict | None = None
    pretrain_split: str | None = None
    encoder: dict = field(default_factory=lambda: {"name": "small"})
    seeds: tuple[int, ...] = (0,)
    train: dict = field(default_factory=dict)
    pretrain_steps: tuple[int, ...] | None = None
    pretexts: tuple[str | dict, ...] = ({"name": "random"},)
    protocols: tuple = ("linear_probe",)
    limit: object = None  # refused: a plumbing check is `bench --limit N`, a mode of one run, not a property of the suite
    report: dict = field(default_factory=dict)
    # torch's CPU threads for the whole run; 1 avoids OpenMP threads spin-waiting on each other
    # when other jobs share the cores (measured: 20x slower fine-tuning with 2 threads under load).
    threads: int | None = None
    launcher: dict = field(default_factory=dict)  # Slurm parameters, used under --launcher slurm

    def __post_init__(self):
        if not isinstance(self.suite, str) or not self.suite.strip():
            raise UserError(f"a suite needs a name (suite: NAME), got {brief(self.suite)}.")
        if "/" in self.suite or "\0" in self.suite or self.suite.strip() in (".", ".."):
            raise UserError(f"a suite's name names its results folder, so it cannot hold '/' or be '.' or '..', got {brief(self.suite)}.")
        for key in ("seeds", "pretexts", "protocols") + (("pretrain_steps",) if self.pretrain_steps is not None else ()):
            if not isinstance(getattr(self, key), tuple) or not getattr(self, key):
                raise UserError(f"the suite's {key} must be a non-empty list, got {getattr(self, key)!r}.")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in self.seeds):
            raise UserError(f"the suite's seeds must be whole numbers from 0 to 2**32 - 1, got {brief(list(self.seeds))}.")
        for key in ("dataset", "pretrain_dataset"):
            value = getattr(self, key)
            if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
                raise UserError(f"the suite's {key} must map option names to values, got {brief(value)}.")
        if self.pretrain_steps is not None and not all(isinstance(s, int) and s >= 0 for s in self.pretrain_steps):
            raise UserError(f"pretrain_steps must be whole numbers >= 0, got {list(self.pretrain_steps)}.")
        for key in ("train", "report", "encoder"):
            if not isinstance(getattr(self, key), dict):
                raise UserError(f"the suite's {key} must be a mapping of option: value, got {getattr(self, key)!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UserError(f"threads must be a whole number of at least 1, got {self.threads!r}.")
        if self.limit is not None:
            raise UserError("a suite has no limit: key (it would turn every run of the suite into a plumbing check); "
                            "remove it and run 'ctxenc bench SUITE --limit N' for a quick check.")


@dataclass(frozen=True)
class Cell:
    """One pretraining (pretext x steps x seed) and the protocols still to run on it."""

    pretext: PretextSpec
    seed: int
    steps: int | None  # a sweep's pretraining length, None outside a sweep

    def folder(self, out: Path) -> Path:
        steps = [f"steps{self.steps}"] if self.steps is not None else []
        return out.joinpath("runs", self.pretext.label.replace("/", "-"), *steps, f"seed{self.seed}")


def load_suite(path: str | Path) -> Suite:
    return from_dict(Suite, read_yaml(path), f"suite {path}")


def resolve_protocols(suite: Suite, path: Path) -> list[tuple[str, str, object, str | dict]]:
    """[(label, protocol name, config, evaluation dataset)]; a mapping entry may name its own `dataset`."""
    resolved = []
    for spec in suite.protocols:
        dataset = suite.dataset
        if isinstance(spec, dict) and "dataset" in spec:
            spec = dict(spec)
            dataset = spec.pop("dataset")
        label, name, cfg = resolve_protocol(spec, search=(path.parent, path.parent.parent))
        resolved.append((label, name, cfg, dataset))
    labels = [r[0] for r in resolved]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UserError(f"protocol label {twice[0]!r} appears twice in {path}; give each entry its own `label`.")
    return resolved


def resolve_pretexts(suite: Suite, path: Path) -> list[PretextSpec]:
    """The suite's pretext rows; two rows with one label (same options) are refused before any work."""
    specs = [pretext_spec(p, f"pretexts of {path}") for p in suite.pretexts]
    labels = [s.label for s in specs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UserError(f"two pretext rows of {path} are both {twice[0]!r}; rows must differ in some option.")
    return specs


def check_report(suite: Suite, path: Path, methods: list[str], protocols: list[str]) -> None:
    """The report section names only protocols and methods the suite runs (a typo fails now, not in an hour)."""
    from ctxenc.results.report import ReportConfig

    cfg = from_dict(ReportConfig, suite.report, f"report of {path}")
    for col in cfg.columns:
        if col["protocol"] not in protocols:
            raise UserError(f"report column {col['title']!r} of {path} names protocol {col['protocol']!r}, which the suite "
                            f"does not run; its protocols: {', '.join(protocols)}.")
    control = [tuple(cfg.controls["comparison"])] if cfg.controls else []
    for pair in [*cfg.comparisons, *control]:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise UserError(f"each report comparison of {path} is a pair [method, baseline], got {pair!r}.")
        what = "control" if control and pair is control[0] else "comparison"
        for method in pair:
            if method not in methods:
                raise UserError(f"report {what} {list(pair)} of {path} names {method!r}, which is not a row of the suite; "
                                f"its rows: {', '.join(methods)}.")


@dataclass(frozen=True)
class Plan:
    """A suite checked before any work: everything `run_suite` needs to run it."""

    suite: Suite
    path: Path
    out: Path
    limit: int | None
    pretexts: list[PretextSpec]
    protocols: list[tuple[str, str, object, str | dict]]

    @property
    def cells(self) -> list[Cell]:
        """pretext x pretraining steps x seed; under --limit the first seed only (more would repeat the check)."""
        seeds = self.suite.seeds[:1] if self.limit else self.suite.seeds
        return [Cell(p, seed, s) for p in self.pretexts for s in (self.suite.pretrain_steps or (None,)) for seed in seeds]


def plan_suite(path: str | Path, out_dir: str | Path | None = None, data_root=None, limit: int | None = None,
               amp: bool = False) -> Plan:
    """Load and check the suite at `path` and its output folder, before any work; a mistake is a `UserError`.

    Default folder: results/<suite>, or results/<suite>-limit<N> under `limit`, so a quick
    check never leaves records a full run would take for its own and skip.
    """
    path = Path(path)
    suite = load_suite(path)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}.")
    out = Path(out_dir) if out_dir else Path("results") / (suite.suite + (f"-limit{limit}" if limit else ""))
    pretexts = resolve_pretexts(suite, path)
    protocols = resolve_protocols(suite, path)
    check_report(suite, path, [p.label for p in pretexts], [label for label, *_ in protocols])
    from_dict(TrainConfig, suite.train, f"train of {path}")  # reject bad keys before any work
    check_encoder(suite.encoder, path)
    slurm_config(suite.launcher, [], f"launcher of {path}", cuda=False, workers=1)  # a typo fails under any launcher
    pretrain_dataset = suite.pretrain_dataset or suite.dataset
    dataset_tasks(pretrain_dataset, data_root)  # an unknown name or a missing folder fails now, not after a pretraining
    if suite.pretrain_split is not None and suite.pretrain_split not in dataset_info(pretrain_dataset)[0].splits:
        raise UserError(f"pretrain_split {suite.pretrain_split!r} of {path} is not a split of {dataset_name(pretrain_dataset)}; "
                        f"its splits: {', '.join(dataset_info(pretrain_dataset)[0].splits)}.")
    for _, name, _, dataset in protocols:
        check_protocol_fits(name, dataset, data_root)
    check_output_folder(out, limit, suite.suite, amp)
    return Plan(suite, path, out, limit, pretexts, protocols)


def check_encoder(encoder: dict, path: Path) -> None:
    """Build the suite's encoder once: an unknown name, option or input size fails now, not after a pretraining."""
    name = encoder.get("name")
    if not isinstance(name, str):
        raise UserError(f"the encoder of {path} needs a name (encoder: {{name: small}}), got {brief(encoder)}.")
    options = {k: v for k, v in encoder.items() if k != "name"}
    create_encoder(name, **{"in_channels": 3, **options, "input_size": options.get("input_size") or default_input_size(name)})


def run_suite(path: str | Path, out_dir: str | Path | None = None, data_root=None, limit: int | None = None,
              progress: bool = True, device: str = "cpu", amp: bool = False, launcher: str = "inline",
              workers: int = 2, slurm: list[str] = (), wait: bool = True, download: bool = False) -> tuple[Path, int]:
    """Run every cell of the suite at `path` (checked first by `plan_suite`).

    launcher: `inline` runs the cells one after another in this process; `local` runs them as
    `workers` parallel jobs on this machine (under `--device cuda` each on a GPU of its own), `slurm`
    as jobs on a Slurm cluster with the suite's `launcher:` parameters overridden by `slurm`
    (['KEY=VALUE', ...]), through submitit (`ctxenc.launch`). Records are written under a file
    lock, and a re-run submits only the cells whose records are missing (and, on Slurm, that are
    not queued or running). wait=False (Slurm only) returns once the jobs are submitted.
    download: fetch the suite's datasets here first (cluster nodes often have no internet).
    Returns (the output folder, jobs left queued or running).
    """
    plan = plan_suite(path, out_dir, data_root, limit, amp)
    suite, out, limit = plan.suite, plan.out, plan.limit
    kind = device_type(device)
    if slurm and launcher != "slurm":
        raise UserError(f"--slurm sets parameters of Slurm jobs, but the launcher is {launcher}; add --launcher slurm or drop --slurm.")
    if not wait and launcher != "slurm":
        raise UserError(f"--no-wait leaves Slurm jobs running after the command ends, but the launcher is {launcher}; add --launcher slurm or drop --no-wait.")
    config = slurm_config(suite.launcher, list(slurm), f"launcher of {plan.path}", kind == "cuda", workers) if launcher == "slurm" else None
    if limit:
        print(f"[{suite.suite}] plumbing check: first seed only, {LIMIT_TRAIN_STEPS} steps, {limit} images per split — "
              "not a result", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    pending = 0
    with output_lock(out):
        devices = sorted(set(read_run_info(out).get("devices", [])) | {kind})
        atomic_write_text(out / "run.json", json.dumps({"limit": limit, "amp": amp, "devices": devices}) + "\n")
        atomic_write_text(out / "suite.yaml", plan.path.read_text())  # the config beside the results
        if download:
            download_data(plan, data_root)
        if launcher == "inline":
            if suite.threads is not None:
                torch.set_num_threads(suite.threads)
            for cell in plan.cells:
                run_cell(suite, cell, plan.protocols, out, data_root, limit, progress, device, amp)
        else:
            done = read_records(out / "records.csv")
            # Jobs are named by their cell's folder, which a later run of the same command names alike.
            jobs = {str(cell.folder(out).relative_to(out)):
                    functools.partial(run_cell_job, str(plan.path.resolve()), i, str(out.resolve()), data_root, limit, device, amp)
                    for i, cell in enumerate(plan.cells)
                    if not all(_has_record(done, cell, label, dataset_name(ds)) for label, _, _, ds in plan.protocols)}
            gpus = visible_gpus() if launcher == "local" and device == "cuda" else None
            pending = run_jobs(jobs, launcher, out / "jobs", workers=workers, slurm=config, gpus=gpus, wait=wait)
    return out, pending


def device_type(device: str) -> str:
    """'cuda:1' -> 'cuda', for run.json (each job checks that its device exists when it starts)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if kind not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; use cpu, cuda or cuda:N.")
    return kind


def download_data(plan: Plan, data_root) -> None:
    """--download: fetch every split the suite reads, in this process, before any job starts."""
    suite = plan.suite
    pretrain_dataset = suite.pretrain_dataset or suite.dataset
    wanted = [(pretrain_dataset, suite.pretrain_split or pretrain_split(pretrain_dataset))]
    wanted += [(dataset, split) for *_, dataset in plan.protocols for split in eval_splits(dataset)]
    fetched = set()
    for dataset, split in wanted:
        if (dataset_spec(dataset), split) not in fetched:
            fetched.add((dataset_spec(dataset), split))
            load_dataset(dataset, split, data_root, download=True, limit=1)


def run_cell_job(path: str, index: int, out: str, data_root, limit, device, amp) -> None:
    """One cell as a cluster job: rebuilt from the suite file, so the job carries only names.

    A Slurm job of several tasks pretrains with one process per task (`ctxenc.distributed`, whose
    environment `ctxenc.launch.Job` sets); the first task then runs the protocols alone.
    """
    plan = plan_suite(path, out, data_root, limit, amp)
    if plan.suite.threads is not None:
        torch.set_num_threads(plan.suite.threads)
    cell = plan.cells[index]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not _todo(cell, plan.protocols, plan.out):
            return
        distributed.init(device)
        try:
            pretrain_cell(plan.suite, cell, plan.out, data_root, plan.limit, False, device, amp)
        finally:
            distributed.close()
        if int(os.environ.get("RANK", "0")) != 0:
            return
    run_cell(plan.suite, cell, plan.protocols, plan.out, data_root, plan.limit, False, device, amp)


def run_cell(suite: Suite, cell: Cell, protocols, out: Path, data_root, limit, progress, device, amp) -> None:
    """Pretrain the cell (or resume it) and run its missing protocols, writing their records
    (replacing any of the same key, e.g. left by a job that was requeued after writing them)."""
    todo = _todo(cell, protocols, out)
    if not todo:
        return
    tic = time.perf_counter()
    checkpoint = pretrain_cell(suite, cell, out, data_root, limit, progress, device, amp)
    for label, name, cfg, dataset in todo:
        if hasattr(cfg, "seed"):  # the seed varies pretraining and evaluation together
            cfg = dataclasses.replace(cfg, seed=cell.seed)
        if hasattr(cfg, "predictions_out"):  # protocols that leave predictions for the report's figures
            cfg = dataclasses.replace(cfg, predictions_out=str(checkpoint.parent / f"predictions-{label}.pt"))
        if limit:
            cfg = PROTOCOLS[name].limited(cfg)
        print(f"[{suite.suite}] {label} on {dataset_name(dataset)}, {_describe(cell)}", flush=True)
        rows = evaluate(checkpoint, name, cfg, dataset, data_root, limit=limit, label=label, device=device, amp=amp)
        # Checkpoints are recorded relative to the results folder, so the folder can move.
        wall = round(time.perf_counter() - tic, 2)
        rows = [{**row, "suite": suite.suite, "checkpoint": str(checkpoint.relative_to(out)), "wall_seconds": wall,
                 "limit": limit} for row in rows]
        replace_records(out / "records.csv", rows)
        tic = time.perf_counter()


def _todo(cell: Cell, protocols, out: Path) -> list:
    """The cell's protocols whose records are missing."""
    done = read_records(out / "records.csv")
    return [(label, name, cfg, ds) for label, name, cfg, ds in protocols if not _has_record(done, cell, label, dataset_name(ds))]


def pretrain_cell(suite: Suite, cell: Cell, out: Path, data_root, limit, progress, device, amp) -> Path:
    """The cell's checkpoint: pretrained now (resuming from its last.pt snapshot, if any) unless it exists."""
    train = from_dict(TrainConfig, {**suite.train, "seed": cell.seed}, f"train of suite {suite.suite}")
    if cell.steps is not None:
        train = dataclasses.replace(train, steps=cell.steps)
    if amp:
        train = dataclasses.replace(train, amp=True)
    if limit:
        train = dataclasses.replace(train, max_steps=min(train.max_steps or LIMIT_TRAIN_STEPS, LIMIT_TRAIN_STEPS),
                                    batch_size=min(train.batch_size, limit))
    folder = cell.folder(out)
    checkpoint = folder / "checkpoint.pt"
    pretrain_dataset = suite.pretrain_dataset or suite.dataset
    if not checkpoint.exists():
        print(f"[{suite.suite}] pretrain {_describe(cell)} on {dataset_name(pretrain_dataset)}", flush=True)
        pretrain(pretrain_dataset, suite.encoder, cell.pretext, train, folder, data_root, limit=limit, progress=progress,
                 resume=True, split=suite.pretrain_split, device=device)
    return checkpoint


def _describe(cell: Cell) -> str:
    return f"{cell.pretext.label} seed {cell.seed}" + (f" ({cell.steps} steps)" if cell.steps is not None else "")


def _has_record(done, cell: Cell, label: str, dataset: str) -> bool:
    if done.empty:
        return False
    hit = ((done["method"] == cell.pretext.label) & (done["seed"] == cell.seed) & (done["protocol"] == label)
           & (done["dataset"] == dataset))
    if cell.steps is not None:
        hit &= done["pretrain_steps"] == cell.steps
    return bool(hit.any())


def check_output_folder(out: Path, limit: int | None, suite_name: str | None = None, amp: bool | None = None) -> None:
    """The folder must be new (and writable), or hold a run of the same suite with the same --limit and
    --amp (records of another suite or size would be mixed, and cells would reuse checkpoints made
    in the other precision). A folder from before run.json recorded --amp passes either way."""
    check_writable_folder(out)
    info = read_run_info(out)
    if "limit" in info and info["limit"] != limit:
        raise UserError(f"{out} holds a run made with {_limit_words(info['limit'])}, this one has {_limit_words(limit)}; "
                        "pass another --out.")
    if amp is not None and "amp" in info and info["amp"] != amp:
        raise UserError(f"{out} holds a run made {_amp_words(info['amp'])}, this one is {_amp_words(amp)}; fp32 and AMP "
                        "cells in one folder would share checkpoints and records, so pass another --out.")
    copy = out / "suite.yaml"
    if suite_name is not None and copy.is_file():
        try:
            before = yaml.safe_load(copy.read_text())
        except yaml.YAMLError:
            before = None
        name = before.get("suite") if isinstance(before, dict) else None
        if name != suite_name:
            raise UserError(f"{out} holds the results of suite {name!r}, not {suite_name!r}; pass another --out.")


def read_run_info(out: Path) -> dict:
    """run.json of a results folder: {"limit", "amp", "devices"} of the runs it holds ({} where there is none)."""
    marker = out / "run.json"
    if not marker.is_file():
        return {}
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        raise UserError(f"{marker} is damaged; remove it if {out} holds no results you need, or pass another --out.")
    return info


def _limit_words(limit: int | None) -> str:
    return f"--limit {limit}" if limit else "no --limit"


def _amp_words(amp: bool) -> str:
    return "with --amp (mixed precision)" if amp else "without --amp (fp32)"
