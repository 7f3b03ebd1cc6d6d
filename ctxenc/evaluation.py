"""The job behind `ctxenc evaluate`: checkpoint + dataset + protocol -> long-format rows."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ctxenc.checkpoint import load_encoder
from ctxenc.config import from_dict, read_yaml
from ctxenc.data import dataset_spec, load_dataset, to_model_input
from ctxenc.errors import UserError
from ctxenc.evaluators import PROTOCOLS
from ctxenc.pretext import PretextConfig


def resolve_protocol(spec: str | dict, search: tuple[Path, ...] = ()) -> tuple[str, str, object]:
    """A protocol name, a YAML file path or a mapping {protocol: NAME, label: LABEL, **options}
    -> (label, name, config).

    The label is what records and tables call the protocol (default: its name); a suite running
    one protocol twice with different options (segmentation frozen and fine-tuned) labels each.
    """
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
    label = options.pop("label", name)
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}.")
    config_cls, _ = PROTOCOLS[name]
    return str(label), name, from_dict(config_cls, options, f"protocol {name!r}")


def prepared_split(dataset, split: str, data_root, size: int, limit: int | None,
                   target: str = "labels") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N, C, size, size) in [-1, 1], targets), loaded once per process.

    dataset: a name or {name, **options}; target: `labels` (N,) / (N, K) or `class_maps` (N, size, size).
    """
    return _prepared_split(dataset_spec(dataset), split, data_root, size, limit, target)


@functools.lru_cache(maxsize=4)
def _prepared_split(spec: tuple, split: str, data_root, size: int, limit: int | None, target: str):
    data = load_dataset(spec, split, data_root)
    targets = data.labels if target == "labels" else data.class_maps
    if targets is None and target == "class_maps":
        raise UserError(f"dataset {spec[0]} has no class maps; segmentation needs a dataset such as fashion_scenes.")
    if target == "class_maps" and targets.shape[-1] != size:
        raise UserError(f"{spec[0]}'s class maps are {targets.shape[-1]} px but the encoder takes {size} px; "
                        f"generate the scenes at size {size}.")
    images = data.images[:limit] if limit else data.images
    targets = targets[:limit] if limit and targets is not None else targets
    return to_model_input(images, size), targets


def evaluate(checkpoint: str | Path, protocol: str, config, dataset, data_root=None,
             limit: int | None = None, label: str | None = None) -> list[dict]:
    """Run one protocol on the encoder of `checkpoint`; returns records rows (without `suite`).

    dataset: a name or {name, **options}; label: the records' protocol name (default: `protocol`).
    """
    encoder, ckpt = load_encoder(checkpoint)
    size = ckpt["data"]["input_size"]
    train = prepared_split(dataset, "train", data_root, size, limit, config.target)
    test = prepared_split(dataset, "test", data_root, size, limit, config.target)
    name = dataset_spec(dataset)[0]
    if train[0].shape[1] != encoder.in_channels:
        raise UserError(f"{name} has {train[0].shape[1]}-channel images but the checkpoint's encoder takes {encoder.in_channels}.")
    _, run = PROTOCOLS[protocol]
    start = time.perf_counter()
    metrics = run(encoder, train, test, config)
    seconds = time.perf_counter() - start
    pretext = PretextConfig(**ckpt["pretext"])
    base = {
        "dataset": name,
        "pretext": pretext.name,
        "encoder": ckpt["encoder"]["name"],
        "mask": pretext.mask_label,
        "loss": pretext.loss,
        "seed": ckpt["train"]["seed"],
        "protocol": label or protocol,
        "pretrain_seconds": round(ckpt["pretrain_seconds"], 2),
        "eval_seconds": round(seconds, 2),
        "checkpoint": str(checkpoint),
    }
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]
