"""Suites: a YAML grid of pretext x seed x protocol, run cell by cell into `records.csv`.

A suite file (see benchmarks/demo.yaml):

    suite: demo
    dataset: fashion_mnist
    encoder: {name: small}
    seeds: [0, 1]
    train: {epochs: 2, batch_size: 64}           # TrainConfig fields
    pretexts:                                     # PretextConfig fields
      - {name: random}
      - {name: context_encoder, mask: random_region}
    protocols: [eval/linear_probe.yaml, {protocol: knn, k: 20}]

Cells whose records exist are skipped and an interrupted pretraining resumes from its snapshot,
so a re-run continues where a killed one ended. A lock file keeps a second run off the same
output folder while the first is alive.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ctxenc.config import from_dict, read_yaml
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.evaluation import evaluate, resolve_protocol
from ctxenc.pretext import PretextConfig
from ctxenc.results.records import append_records, read_records


@dataclass(frozen=True)
class Suite:
    suite: str
    dataset: str = "fashion_mnist"
    encoder: dict = field(default_factory=lambda: {"name": "small"})
    seeds: tuple[int, ...] = (0,)
    train: dict = field(default_factory=dict)
    pretexts: tuple[dict, ...] = ({"name": "random"},)
    protocols: tuple = ("linear_probe",)
    limit: int | None = None


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
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        (out / "suite.yaml").write_text(path.read_text())  # the config beside the results
        run_cells(suite, pretexts, protocols, out, data_root, limit, progress)
    return out


def run_cells(suite: Suite, pretexts, protocols, out: Path, data_root, limit, progress) -> None:
    records = out / "records.csv"
    for pretext in pretexts:
        for seed in suite.seeds:
            train = from_dict(TrainConfig, {**suite.train, "seed": seed}, f"train of suite {suite.suite}")
            if limit:
                train = dataclasses.replace(train, max_steps=min(train.max_steps or 3, 3), batch_size=min(train.batch_size, limit))
            cell = out / "runs" / pretext_label(pretext).replace("/", "-") / f"seed{seed}"
            checkpoint = cell / "checkpoint.pt"
            done = read_records(records)
            todo = [(name, cfg) for name, cfg in protocols if not _has_record(done, pretext, seed, name)]
            if not todo:
                continue
            if not checkpoint.exists():
                print(f"[{suite.suite}] pretrain {pretext_label(pretext)} seed {seed}", flush=True)
                pretrain(suite.dataset, suite.encoder, pretext, train, cell, data_root, limit=limit, progress=progress, resume=True)
            for name, cfg in todo:
                if hasattr(cfg, "seed"):  # the seed varies pretraining and evaluation together
                    cfg = dataclasses.replace(cfg, seed=seed)
                print(f"[{suite.suite}] {name} on {pretext_label(pretext)} seed {seed}", flush=True)
                rows = evaluate(checkpoint, name, cfg, suite.dataset, data_root, limit=limit)
                # Checkpoints are recorded relative to the results folder, so the folder can move.
                rows = [{**row, "suite": suite.suite, "checkpoint": str(checkpoint.relative_to(out))} for row in rows]
                append_records(records, rows)


def _has_record(done, pretext: PretextConfig, seed: int, protocol: str) -> bool:
    if done.empty:
        return False
    hit = ((done["pretext"] == pretext.name) & (done["mask"] == pretext.mask_label) & (done["loss"] == pretext.loss)
           & (done["seed"] == seed) & (done["protocol"] == protocol))
    return bool(hit.any())



@contextmanager
def output_lock(out: Path):
    """Hold `out/.lock` (pid@host) while running; a lock whose process is dead is taken over."""
    lock = out / ".lock"
    me = f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            if _alive(owner):
                raise UserError(f"another ctxenc bench (process {owner}) is writing to {out}; wait for it to finish "
                                "or use another --out.") from None
            lock.unlink(missing_ok=True)  # left by a dead process
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise UserError(f"could not take the lock {lock}; remove it if no ctxenc bench is running.")
    try:
        yield
    finally:
        if lock.exists() and lock.read_text().strip() == me:
            lock.unlink()


def _alive(owner: str) -> bool:
    """Whether the process named 'pid@host' is running (on another host: assume it is)."""
    pid, _, host = owner.partition("@")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
