"""The job behind `ctxenc evaluate`: checkpoint + dataset + protocol -> long-format rows."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ctxenc.checkpoint import load_encoder, rebuild_model
from ctxenc.config import from_dict, read_yaml
from ctxenc.data import load_dataset, to_model_input
from ctxenc.errors import UserError
from ctxenc.evaluators import PROTOCOLS
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


@functools.lru_cache(maxsize=4)
def prepared_split(dataset: str, split: str, data_root, size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, size, size) in [-1, 1], labels (N,)), loaded once per process."""
    data = load_dataset(dataset, split, data_root)
    images, labels = (data.images[:limit], data.labels[:limit]) if limit else (data.images, data.labels)
    return to_model_input(images, size), labels


def evaluate(checkpoint: str | Path, protocol: str, config, dataset: str, data_root=None,
             limit: int | None = None) -> list[dict]:
    """Run one protocol on the encoder of `checkpoint`; returns records rows (without `suite`)."""
    encoder, ckpt = load_encoder(checkpoint)
    size = ckpt["data"]["input_size"]
    train = prepared_split(dataset, "train", data_root, size, limit)
    test = prepared_split(dataset, "test", data_root, size, limit)
    if train[0].shape[1] != encoder.in_channels:
        raise UserError(f"{dataset} has {train[0].shape[1]}-channel images but the checkpoint's encoder takes {encoder.in_channels}.")
    _, run = PROTOCOLS[protocol]
    subject = rebuild_model(ckpt).eval() if getattr(config, "uses_model", False) else encoder
    start = time.perf_counter()
    metrics = run(subject, train, test, config)
    seconds = time.perf_counter() - start
    pretext = PretextConfig(**ckpt["pretext"])
    base = {
        "dataset": dataset,
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
