"""Suites: a YAML grid of pretext x seed x protocol, run cell by cell into `records.csv`.

A suite file (see benchmarks/demo.yaml):

    suite: demo
    dataset: fashion_mnist                        # or {name: fashion_scenes, size: 32, ...}
    encoder: {name: small}
    seeds: [0, 1]
    train: {epochs: 2, batch_size: 64}           # TrainConfig fields
    pretexts:                                     # PretextConfig fields
      - {name: random}
      - {name: context_encoder, mask: random_region}
    protocols: [eval/linear_probe.yaml, {protocol: knn, k: 20},
                {protocol: segmentation, label: segmentation_frozen, mode: frozen}]
    report: {paper: table2, columns: [...], comparisons: [...]}   # see ctxenc/results/report.py

Cells whose records exist are skipped, so a re-run continues where a stopped one ended.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ctxenc.config import from_dict, read_yaml
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.evaluation import evaluate, resolve_protocol
from ctxenc.pretext import PretextConfig
from ctxenc.results.records import append_records, read_records


@dataclass(frozen=True)
class Suite:
    suite: str
    dataset: str | dict = "fashion_mnist"
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


def run_suite(path: str | Path, out_dir: str | Path | None = None, data_root=None, limit: int | None = None,
              progress: bool = True) -> Path:
    """Run every cell of the suite at `path`; returns the output folder (default results/<suite>)."""
    path = Path(path)
    suite = load_suite(path)
    out = Path(out_dir) if out_dir else Path("results") / suite.suite
    limit = limit or suite.limit
    pretexts = [from_dict(PretextConfig, p, f"pretexts of {path}") for p in suite.pretexts]
    protocols = [resolve_protocol(p, search=(path.parent, path.parent.parent)) for p in suite.protocols]
    from_dict(TrainConfig, suite.train, f"train of {path}")  # reject bad keys before any work
    if suite.threads is not None:
        if suite.threads < 1:
            raise UserError(f"threads must be at least 1, got {suite.threads} in {path}.")
        torch.set_num_threads(suite.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.yaml").write_text(path.read_text())  # the resolved config beside the results
    records = out / "records.csv"
    for pretext in pretexts:
        for seed in suite.seeds:
            train = from_dict(TrainConfig, {**suite.train, "seed": seed}, f"train of {path}")
            if limit:
                train = dataclasses.replace(train, max_steps=min(train.max_steps or 3, 3), batch_size=min(train.batch_size, limit))
            cell = out / "runs" / pretext_label(pretext).replace("/", "-") / f"seed{seed}"
            checkpoint = cell / "checkpoint.pt"
            done = read_records(records)
            todo = [(label, name, cfg) for label, name, cfg in protocols if not _has_record(done, pretext, seed, label)]
            if not todo:
                continue
            if not checkpoint.exists():
                print(f"[{suite.suite}] pretrain {pretext_label(pretext)} seed {seed}", flush=True)
                pretrain(suite.dataset, suite.encoder, pretext, train, cell, data_root, limit=limit, progress=progress)
            for label, name, cfg in todo:
                if hasattr(cfg, "seed"):  # the seed varies pretraining and evaluation together
                    cfg = dataclasses.replace(cfg, seed=seed)
                print(f"[{suite.suite}] {label} on {pretext_label(pretext)} seed {seed}", flush=True)
                rows = evaluate(checkpoint, name, cfg, suite.dataset, data_root, limit=limit, label=label)
                append_records(records, [{**row, "suite": suite.suite} for row in rows])
    return out


def _has_record(done, pretext: PretextConfig, seed: int, protocol: str) -> bool:
    if done.empty:
        return False
    hit = ((done["pretext"] == pretext.name) & (done["mask"] == pretext.mask_label) & (done["loss"] == pretext.loss)
           & (done["seed"] == seed) & (done["protocol"] == protocol))
    return bool(hit.any())


def check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder.")
