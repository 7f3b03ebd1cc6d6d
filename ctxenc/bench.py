"""Suites: a YAML grid of pretext x seed x protocol, run cell by cell into `records.csv`.

A suite file (see benchmarks/demo.yaml, benchmarks/paper_table2.yaml):

    suite: demo
    dataset: fashion_mnist                        # evaluation data (and pretraining data by default),
                                                  # or {name: fashion_scenes, size: 32, ...}
    pretrain_dataset: stl10                       # optional: pretrain elsewhere ...
    pretrain_split: train+unlabeled               # ... on this split (default: its train split)
    encoder: {name: small}
    seeds: [0, 1]
    train: {epochs: 2, batch_size: 64}           # TrainConfig fields
    pretexts:                                     # PretextConfig fields
      - {name: random}
      - {name: context_encoder, mask: random_region}
    protocols:                                    # a name, a YAML file, or a mapping; a mapping
      - eval/linear_probe.yaml                    # may name its own `dataset` and a `label`
      - {protocol: knn, k: 20, dataset: cifar10}
      - {protocol: segmentation, label: segmentation_frozen, mode: frozen}
    report: {paper: table2, columns: [...], comparisons: [...]}   # see ctxenc/results/report.py

Cells whose records exist are skipped and an interrupted pretraining resumes from its snapshot,
so a re-run continues where a killed one ended. A lock file keeps a second run off the same
output folder while the first is alive.
`--limit N` runs every pretext and protocol on N images per split, for the first seed only, with
3 training steps and shortened evaluators (LIMIT_OVERRIDES), into its own folder, so a long
suite is checked end to end in about a minute.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ctxenc.config import from_dict, read_yaml
from ctxenc.data import dataset_name, dataset_tasks
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.io import output_lock
from ctxenc.evaluation import check_protocol_fits, evaluate, resolve_protocol
from ctxenc.pretext import PretextConfig
from ctxenc.results.records import append_records, read_records

# Under --limit, evaluator options of these names are capped (where a protocol has them), and
# hyper-parameter grids shrink to their first value: the check is of the plumbing, not the search.
LIMIT_OVERRIDES = {"epochs": 1, "min_steps": 0, "max_iter": 10, "max_steps": 3}
LIMIT_FIRST_ONLY = ("lrs", "weight_decays")
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
    pretexts: tuple[dict, ...] = ({"name": "random"},)
    protocols: tuple = ("linear_probe",)
    limit: int | None = None
    report: dict = field(default_factory=dict)
    # torch's CPU threads for the whole run; 1 avoids OpenMP threads spin-waiting on each other
    # when other jobs share the cores (measured: 20x slower fine-tuning with 2 threads under load).
    threads: int | None = None


def load_suite(path: str | Path) -> Suite:
    return from_dict(Suite, read_yaml(path), f"suite {path}")


def pretext_label(cfg: PretextConfig) -> str:
    """How a pretext is named in tables: random, autoencoder, context_encoder/random_region/l2."""
    return cfg.name if not cfg.uses_masks else f"{cfg.name}/{cfg.mask}/{cfg.loss}"


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
    return resolved


def limited(cfg, limit: int | None):
    """A protocol config with LIMIT_OVERRIDES applied where it has those fields."""
    if not limit:
        return cfg
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {k: min(v, getattr(cfg, k)) for k, v in LIMIT_OVERRIDES.items()
               if k in names and isinstance(getattr(cfg, k), int)}
    changes.update({k: getattr(cfg, k)[:1] for k in LIMIT_FIRST_ONLY if k in names and getattr(cfg, k)})
    return dataclasses.replace(cfg, **changes)


def run_suite(path: str | Path, out_dir: str | Path | None = None, data_root=None, limit: int | None = None,
              progress: bool = True, device: str = "cpu", amp: bool = False) -> Path:
    """Run every cell of the suite at `path`; returns the output folder.

    Default folder: results/<suite>, or results/<suite>-limit<N> under `limit`, so a quick
    check never leaves records a full run would take for its own and skip.
    """
    path = Path(path)
    suite = load_suite(path)
    limit = limit or suite.limit
    out = Path(out_dir) if out_dir else Path("results") / (suite.suite + (f"-limit{limit}" if limit else ""))
    pretexts = [from_dict(PretextConfig, p, f"pretexts of {path}") for p in suite.pretexts]
    protocols = resolve_protocols(suite, path)
    from_dict(TrainConfig, suite.train, f"train of {path}")  # reject bad keys before any work
    pretrain_dataset = suite.pretrain_dataset or suite.dataset
    dataset_tasks(pretrain_dataset, data_root)  # an unknown name or a missing folder fails now, not after a pretraining
    for _, name, _, dataset in protocols:
        check_protocol_fits(name, dataset, data_root)
    check_output_folder(out, limit)
    if suite.threads is not None:
        if suite.threads < 1:
            raise UserError(f"threads must be at least 1, got {suite.threads} in {path}.")
        torch.set_num_threads(suite.threads)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        (out / "run.json").write_text(json.dumps({"limit": limit}) + "\n")
        (out / "suite.yaml").write_text(path.read_text())  # the config beside the results
        run_cells(suite, pretexts, protocols, out, data_root, limit, progress, device, amp)
    return out


def run_cells(suite: Suite, pretexts, protocols, out: Path, data_root, limit, progress, device, amp) -> None:
    pretrain_dataset = suite.pretrain_dataset or suite.dataset
    records = out / "records.csv"
    seeds = suite.seeds[:1] if limit else suite.seeds  # a plumbing check: more seeds only repeat it
    for pretext in pretexts:
        for seed in seeds:
            train = from_dict(TrainConfig, {**suite.train, "seed": seed}, f"train of suite {suite.suite}")
            if amp:
                train = dataclasses.replace(train, amp=True)
            if limit:
                train = dataclasses.replace(train, max_steps=min(train.max_steps or LIMIT_TRAIN_STEPS, LIMIT_TRAIN_STEPS),
                                            batch_size=min(train.batch_size, limit))
            cell = out / "runs" / pretext_label(pretext).replace("/", "-") / f"seed{seed}"
            checkpoint = cell / "checkpoint.pt"
            done = read_records(records)
            todo = [(label, name, cfg, ds) for label, name, cfg, ds in protocols
                    if not _has_record(done, pretext, seed, label, dataset_name(ds))]
            if not todo:
                continue
            if not checkpoint.exists():
                print(f"[{suite.suite}] pretrain {pretext_label(pretext)} seed {seed} on {dataset_name(pretrain_dataset)}", flush=True)
                pretrain(pretrain_dataset, suite.encoder, pretext, train, cell, data_root, limit=limit, progress=progress,
                         resume=True, split=suite.pretrain_split, device=device)
            for label, name, cfg, dataset in todo:
                if hasattr(cfg, "seed"):  # the seed varies pretraining and evaluation together
                    cfg = dataclasses.replace(cfg, seed=seed)
                print(f"[{suite.suite}] {label} on {dataset_name(dataset)}, {pretext_label(pretext)} seed {seed}", flush=True)
                rows = evaluate(checkpoint, name, limited(cfg, limit), dataset, data_root, limit=limit, label=label,
                                device=device)
                # Checkpoints are recorded relative to the results folder, so the folder can move.
                rows = [{**row, "suite": suite.suite, "checkpoint": str(checkpoint.relative_to(out))} for row in rows]
                append_records(records, rows)


def _has_record(done, pretext: PretextConfig, seed: int, label: str, dataset: str) -> bool:
    if done.empty:
        return False
    hit = ((done["pretext"] == pretext.name) & (done["mask"] == pretext.mask_label) & (done["loss"] == pretext.loss)
           & (done["seed"] == seed) & (done["protocol"] == label) & (done["dataset"] == dataset))
    return bool(hit.any())


def check_output_folder(out: Path, limit: int | None) -> None:
    """The folder must be new, or hold a run with the same --limit (records of another size would be mixed)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder.")
    marker = out / "run.json"
    if marker.is_file():
        before = json.loads(marker.read_text()).get("limit")
        if before != limit:
            raise UserError(f"{out} holds a run made with {_limit_words(before)}, this one has {_limit_words(limit)}; "
                            "pass another --out.")


def _limit_words(limit: int | None) -> str:
    return f"--limit {limit}" if limit else "no --limit"
