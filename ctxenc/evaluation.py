"""The job behind `ctxenc evaluate`: checkpoint + dataset + protocol -> long-format rows."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ctxenc.checkpoint import load_encoder, rebuild_model
from ctxenc.config import from_dict, read_yaml
from ctxenc.data import dataset_task, eval_splits, load_dataset
from ctxenc.data.transforms import fit_label_maps, load_size_for, to_model_input
from ctxenc.device import resolve_device
from ctxenc.errors import UserError
from ctxenc.evaluators import PROTOCOL_TASKS, PROTOCOLS
from ctxenc.pretext import PretextConfig


def resolve_protocol(spec: str | dict, search: tuple[Path, ...] = ()) -> tuple[str, object]:
    """A protocol name, a YAML file path or a mapping {protocol: NAME, **options} -> (name, config)."""
    if isinstance(spec, str) and spec in PROTOCOLS:
        spec = {"protocol": spec}
    elif isinstance(spec, str):
        candidates = [Path(spec)] + [base / spec for base in search]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise UserError(f"unknown protocol {spec!r}: not one of {', '.join(PROTOCOLS)} and not a YAML file.")
        spec = read_yaml(path)
    options = dict(spec)
    name = options.pop("protocol", None)
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}.")
    config_cls, _ = PROTOCOLS[name]
    return name, from_dict(config_cls, options, f"protocol {name!r}")


TASK_NAMES = {"single_label": "single-label", "multi_label": "multi-label", "segmentation": "segmentation",
              "unlabeled": "unlabeled"}


def check_protocol_fits(protocol: str, dataset: str, data_root=None) -> None:
    """Refuse, in one sentence, a protocol whose labels the dataset does not have."""
    task = dataset_task(dataset, data_root)
    fits = PROTOCOL_TASKS[protocol]
    if task in fits:
        return
    needs = " or ".join(TASK_NAMES[t] for t in fits)
    others = [p for p, tasks in PROTOCOL_TASKS.items() if task in tasks]
    hint = f"protocols for {TASK_NAMES[task]} data: {', '.join(others)}" if others else "it can only be used for pretraining"
    raise UserError(f"protocol {protocol!r} needs {needs} data, but {dataset} is {TASK_NAMES[task]}; {hint}.")


@functools.lru_cache(maxsize=4)
def prepared_split(dataset: str, split: str, data_root, size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, size, size) in [-1, 1], labels), loaded once per process.

    Labels as the dataset holds them; segmentation maps brought to (N, size, size) with the
    same crop or resize as their images (`ctxenc.data.transforms.fit_label_maps`).
    """
    data = load_dataset(dataset, split, data_root, limit=limit, load_size=load_size_for(size))
    labels = fit_label_maps(data.labels, size) if data.task == "segmentation" else data.labels
    return to_model_input(data.images, size), labels


def evaluate(checkpoint: str | Path, protocol: str, config, dataset: str, data_root=None,
             limit: int | None = None, device: str = "cpu") -> list[dict]:
    """Run one protocol on the encoder of `checkpoint`; returns records rows (without `suite`).

    The encoder runs on `device`; evaluators follow it (features are computed there).
    """
    check_protocol_fits(protocol, dataset, data_root)
    dev = resolve_device(device)
    encoder, ckpt = load_encoder(checkpoint)
    size = ckpt["data"]["input_size"]
    train_split, test_split = eval_splits(dataset)
    train = prepared_split(dataset, train_split, data_root, size, limit)
    test = prepared_split(dataset, test_split, data_root, size, limit)
    if train[0].shape[1] != encoder.in_channels:
        raise UserError(f"{dataset} has {train[0].shape[1]}-channel images but the checkpoint's encoder takes {encoder.in_channels}.")
    _, run = PROTOCOLS[protocol]
    subject = rebuild_model(ckpt).eval() if getattr(config, "uses_model", False) else encoder
    start = time.perf_counter()
    metrics = run(subject.to(dev), train, test, config)
    seconds = time.perf_counter() - start
    pretext = PretextConfig(**ckpt["pretext"])
    base = {
        "dataset": dataset,
        "pretrain_dataset": ckpt["data"]["dataset"],
        "pretext": pretext.name,
        "encoder": ckpt["encoder"]["name"],
        "mask": pretext.mask_label,
        "loss": pretext.loss,
        "seed": ckpt["train"]["seed"],
        "protocol": protocol,
        "pretrain_seconds": round(ckpt["pretrain_seconds"], 2),
        "eval_seconds": round(seconds, 2),
        "checkpoint": str(checkpoint),
    }
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]
