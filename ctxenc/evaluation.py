"""The job behind `ctxenc evaluate`: checkpoint + dataset + protocol -> long-format rows."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ctxenc.checkpoint import checkpoint_pretext, load_encoder, rebuild_model
from ctxenc.config import brief, from_dict, read_yaml
from ctxenc.data import dataset_name, dataset_spec, dataset_tasks, eval_splits, load_dataset
from ctxenc.data.transforms import fit_label_maps, load_size_for
from ctxenc.device import resolve_device
from ctxenc.errors import UserError
from ctxenc.evaluators import PROTOCOLS
from ctxenc.evaluators.features import bfloat16_inference
from ctxenc.evaluators.inputs import ModelInputs
from ctxenc.provenance import device_fields, provenance


MAX_LABEL_BYTES = 100  # a file name holds 255 bytes: `label_fraction-<label>.png` must fit


def resolve_protocol(spec: str | dict, search: tuple[Path, ...] = ()) -> tuple[str, str, object]:
    """A protocol name, a YAML file path or a mapping {protocol: NAME, label: LABEL, **options}
    -> (label, name, config).

    The label is what records and tables call the protocol (default: its name); a suite running
    one protocol twice with different options (segmentation frozen and fine-tuned) labels each.
    Labels also name files (`label_fraction-<label>.png`, `predictions-<label>.pt`), so they are
    refused where a suite's name would be: empty, holding '/' or NUL, '.' or '..', or too long for a file name.
    """
    if not isinstance(spec, (str, dict)):
        raise UserError(f"a protocol is a name, a YAML file or a mapping {{protocol: NAME, ...}}, got {spec!r}.")
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
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise UserError(f"unknown protocol {brief(name)}; valid protocols: {', '.join(PROTOCOLS)}.")
    if (not isinstance(label, str) or not label.strip() or "/" in label or "\0" in label or label.strip() in (".", "..")
            or len(label.encode()) > MAX_LABEL_BYTES):
        raise UserError(f"a protocol's label names its records and files, so it must be a non-empty name of at most "
                        f"{MAX_LABEL_BYTES} bytes, without '/', and not '.' or '..', got {brief(label)}.")
    return label, name, from_dict(PROTOCOLS[name].config, options, f"protocol {name!r}")


def prepared_split(dataset, split: str, data_root, size: int, limit: int | None,
                   target: str = "labels") -> tuple[ModelInputs, torch.Tensor | None]:
    """(images, targets), loaded once per process.

    images: the stored uint8 images as `ModelInputs`, which an evaluator reads as (N, C, size, size)
    in [-1, 1], batch by batch (converted on the device): the split is never held as float.
    dataset: a name or {name, **options}; target: `labels` (N,) / (N, K), `class_maps` (N, size, size) or `boxes`.
    """
    return _prepared_split(dataset_spec(dataset), split, data_root, size, limit, target)


TASK_NAMES = {"single_label": "single-label", "multi_label": "multi-label", "segmentation": "segmentation",
              "boxes": "box-annotated", "unlabeled": "unlabeled"}


def check_protocol_fits(protocol: str, dataset, data_root=None) -> None:
    """Refuse, in one sentence, a protocol whose labels the dataset does not have."""
    tasks = dataset_tasks(dataset, data_root)
    fits = PROTOCOLS[protocol].tasks
    if any(t in fits for t in tasks):
        return
    needs = " or ".join(TASK_NAMES[t] for t in fits)
    has = " and ".join(TASK_NAMES[t] for t in tasks)
    others = [p.name for p in PROTOCOLS.values() if any(t in p.tasks for t in tasks)]
    hint = f"protocols for {has} data: {', '.join(others)}" if others else "it can only be used for pretraining"
    raise UserError(f"protocol {protocol!r} needs {needs} data, but {dataset_name(dataset)} is {has}; {hint}.")


@functools.lru_cache(maxsize=4)
def _prepared_split(spec: tuple, split: str, data_root, size: int, limit: int | None, target: str):
    """Class maps are brought to (N, size, size) with the same crop or resize as their images
    (`ctxenc.data.transforms.fit_label_maps`)."""
    data = load_dataset(spec, split, data_root, limit=limit, load_size=load_size_for(size))
    targets = {"labels": data.labels, "class_maps": data.class_maps, "boxes": data.boxes}[target]
    if targets is None and target != "labels":
        needs = "voc2012_seg" if target == "class_maps" else "voc2007"
        raise UserError(f"dataset {spec[0]} has no {target.replace('_', ' ')}; this protocol needs a dataset such as {needs} or fashion_scenes.")
    if target == "class_maps":
        targets = fit_label_maps(targets, size)
    if target == "boxes":
        from ctxenc.data.transforms import fit_boxes

        targets = fit_boxes(targets, tuple(data.images.shape[-2:]), size)
    return ModelInputs(data.images, size), targets


def evaluate(checkpoint: str | Path, protocol: str, config, dataset, data_root=None,
             limit: int | None = None, label: str | None = None, device: str = "cpu", amp: bool = False) -> list[dict]:
    """Run one protocol on the encoder of `checkpoint`; returns records rows (without `suite`).

    dataset: a name or {name, **options}; label: the records' protocol name (default: `protocol`).
    The encoder runs on `device`; evaluators follow it (images are converted and features computed
    there, batch by batch). amp: the batched forward passes (frozen features, BatchNorm
    recalibration, inpainting, scoring a fine-tuned model) run under bfloat16 autocast, their
    outputs cast back to float32 before any probe, head or metric; the training steps of the
    fine-tuning protocols (finetune, segmentation, detection) stay float32.
    """
    check_protocol_fits(protocol, dataset, data_root)
    dev = resolve_device(device)
    encoder, ckpt = load_encoder(checkpoint)
    size = ckpt["data"]["input_size"]
    train_split, test_split = eval_splits(dataset)
    target = getattr(config, "target", "labels")
    train = prepared_split(dataset, train_split, data_root, size, limit, target)
    test = prepared_split(dataset, test_split, data_root, size, limit, target)
    name = dataset_name(dataset)
    if train[0].shape[1] != encoder.in_channels:
        raise UserError(f"{name} has {train[0].shape[1]}-channel images but the checkpoint's encoder takes {encoder.in_channels}.")
    subject = rebuild_model(ckpt).eval() if getattr(config, "uses_model", False) else encoder
    start = time.perf_counter()
    with bfloat16_inference(amp):
        metrics = PROTOCOLS[protocol].run(subject.to(dev), train, test, config)
    seconds = time.perf_counter() - start
    base = {
        "dataset": name,
        "pretrain_dataset": dataset_name(ckpt["data"]["dataset"]),
        **checkpoint_pretext(ckpt).record_fields(),
        "encoder": ckpt["encoder"]["name"],
        "seed": ckpt["train"]["seed"],
        "protocol": label or protocol,
        "pretrain_seconds": round(ckpt["pretrain_seconds"], 2),
        "pretrain_steps": ckpt["pretrain_steps"],
        "eval_seconds": round(seconds, 2),
        "checkpoint": str(checkpoint),
        **provenance(),
        **device_fields(dev, amp),
    }
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]
