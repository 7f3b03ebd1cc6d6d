"""Checkpoints: one self-describing file, written atomically, loaded strictly.

A checkpoint is a plain dict of tensors and primitives (so `torch.load(weights_only=True)`
reads it) holding the encoder's config, the pretext config, the data preprocessing and the
weights: an evaluator rebuilds the encoder from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ctxenc.encoders import Encoder, create_encoder
from ctxenc.errors import UserError
from ctxenc.io import atomic_write
from ctxenc.pretext import PretextSpec, PretrainData, build_pretext, pretext_spec

FORMAT = "ctxenc-checkpoint-2"  # 2: pretexts as plug-ins (pretext options by name, optimizers by name)
OLD_FORMATS = ("ctxenc-checkpoint-1",)


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` with every tensor in it on the CPU (weights, optimizer moments, RNG states,
    wherever they trained), to a temporary file beside `path`, then rename: a kill never leaves a
    torn file."""
    payload = on_cpu({"format": FORMAT, **payload})
    atomic_write(path, lambda f: torch.save(payload, f))


def on_cpu(obj):
    """`obj` with every tensor in it (through dicts, lists and tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder written by `ctxenc pretrain` -> its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise UserError(f"{path} is a folder without a checkpoint.pt; pass a run folder written by 'ctxenc pretrain' "
                            "or its checkpoint file.")
        return path / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the checkpoint.pt written by 'ctxenc pretrain' or its run folder.")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ctxenc checkpoint (a file, or a run folder holding checkpoint.pt) with `weights_only=True`,
    its tensors on the CPU (`load_state_dict` of a model or optimizer then copies them onto its own
    device); anything else is a `UserError`."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip and unpickler errors all mean: not a checkpoint
        raise UserError(f"{path} is not a readable ctxenc checkpoint; pass the checkpoint.pt written by 'ctxenc pretrain'.") from None
    if isinstance(ckpt, dict) and ckpt.get("format") in OLD_FORMATS:
        raise UserError(f"{path} predates ctxenc's pretext plug-in format ({ckpt['format']}); pretrain it again with this version.")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a ctxenc checkpoint (no '{FORMAT}' marker); pass one written by 'ctxenc pretrain'.")
    return ckpt


def checkpoint_pretext(ckpt: dict) -> PretextSpec:
    """The pretext a checkpoint was trained with."""
    return pretext_spec(ckpt["pretext"], "the checkpoint's pretext")


def rebuild_model(ckpt: dict) -> torch.nn.Module:
    """The full pretext model (encoder, decoder, discriminator, heads) with the checkpoint's weights."""
    encoder = create_encoder(**ckpt["encoder"])
    data = ckpt["data"]
    info = PretrainData(fill=torch.tensor(data["fill"]), num_classes=data.get("num_classes"), task=data.get("task"))
    model = build_pretext(checkpoint_pretext(ckpt), encoder, info)
    _load_strict(model, ckpt["model"], ckpt)
    return model


def load_encoder(path: str | os.PathLike) -> tuple[Encoder, dict]:
    """Rebuild the encoder of a checkpoint, in eval mode, and return it with the checkpoint."""
    ckpt = load_checkpoint(path)
    encoder = create_encoder(**ckpt["encoder"])
    state = {k.removeprefix("encoder."): v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    _load_strict(encoder, state, ckpt)
    return encoder.eval(), ckpt


def _load_strict(module: torch.nn.Module, state: dict, ckpt: dict) -> None:
    """load_state_dict(strict=True), with the first mismatch named in one sentence."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        detail = f"{k} has shape {tuple(state[k].shape)} in the file but {tuple(expected[k].shape)} in the model"
    elif missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
    else:
        module.load_state_dict(state, strict=True)
        return
    raise UserError(f"the checkpoint's weights do not fit its encoder {ckpt['encoder']['name']!r}: {detail}; "
                    "it was written by a different model or a different ctxenc version.")
