"""The job behind `ctxenc export`: a checkpoint's encoder as a plain state_dict plus a small JSON file.

OUT/encoder.pt is the encoder's `state_dict()` alone (tensors only: `torch.load(weights_only=True)`
reads it, no ctxenc needed); OUT/encoder.json says what to load it into and what the encoder
expects:

    {"format": "ctxenc-encoder-1", "encoder": {"name": ..., **options}, "input": {...},
     "stages": {stage: [C, H, W]}, "pretext": {...}, "pretrain": {...}, "load": "..."}

For `timm:<model>` encoders the keys are timm's own: the state dict loads with strict=True into
`timm.create_model(**json["timm"]["create_model"])` (features_only, as ctxenc trains it), and
where it also fits the pooled model (`num_classes=0`, no classifier) that form is given as
`create_model_pooled`. For ctxenc's own encoders it loads into
`ctxenc.encoders.create_encoder(**json["encoder"])`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ctxenc.checkpoint import checkpoint_file, checkpoint_pretext, load_encoder
from ctxenc.encoders import Encoder
from ctxenc.io import atomic_write

FORMAT = "ctxenc-encoder-1"


def input_contract(encoder: Encoder) -> dict:
    """What the encoder takes, as data (the API's contract, `ctxenc.api`)."""
    s = encoder.input_size
    return {
        "layout": "NCHW",
        "channels": encoder.in_channels,
        "color": "grayscale" if encoder.in_channels == 1 else "RGB",
        "size": [s, s],
        "dtype": "float32",
        "range": [-1.0, 1.0],
        "from_uint8": "x / 127.5 - 1",
        "resize": f"images within 15% of {s} px are padded (black) or centre-cropped, others resized (shorter side, "
                  "bilinear, antialiased) and centre-cropped: ctxenc.data.transforms.to_model_input",
    }


def timm_state_dict(encoder: Encoder) -> tuple[dict[str, torch.Tensor], dict]:
    """A `timm:` encoder's weights under timm's own names, and how to build the model they load into."""
    import timm

    state = encoder.net.state_dict()
    model = encoder.config["name"].partition(":")[2]
    features_only = {"model_name": model, "pretrained": False, "features_only": True, "in_chans": encoder.in_channels}
    info = {"create_model": features_only}
    pooled = {"model_name": model, "pretrained": False, "num_classes": 0, "in_chans": encoder.in_channels}
    try:
        # features_only keeps the modules up to the last feature level; a model with more layers
        # after it (a head conv, a final norm) does not take these weights strictly.
        timm.create_model(**pooled).load_state_dict(state, strict=True)
        info["create_model_pooled"] = pooled
    except RuntimeError:
        pass
    return state, info


def export_encoder(checkpoint: str | os.PathLike, out: Path) -> list[Path]:
    """Write OUT/encoder.pt and OUT/encoder.json for a checkpoint file or run folder; returns both paths."""
    path = checkpoint_file(checkpoint)
    encoder, ckpt = load_encoder(path)
    meta = {
        "format": FORMAT,
        "encoder": encoder.config,
        "input": input_contract(encoder),
        "stages": {k: list(v) for k, v in encoder.feature_shapes().items()},
        "pretext": {**ckpt["pretext"], "label": checkpoint_pretext(ckpt).label},
        "pretrain": {"dataset": ckpt["data"]["dataset"], "split": ckpt["data"].get("split"),
                     "steps": ckpt.get("pretrain_steps"), "seed": ckpt["train"]["seed"]},
        "checkpoint": str(path),
    }
    if encoder.config["name"].startswith("timm:"):
        state, meta["timm"] = timm_state_dict(encoder)
        meta["load"] = "timm.create_model(**timm['create_model']).load_state_dict(torch.load('encoder.pt'), strict=True)"
    else:
        state = encoder.state_dict()
        meta["load"] = "ctxenc.encoders.create_encoder(**encoder).load_state_dict(torch.load('encoder.pt'), strict=True)"
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    weights = atomic_write(out / "encoder.pt", lambda f: torch.save(state, f))
    info = atomic_write(out / "encoder.json", lambda f: f.write(json.dumps(meta, indent=2) + "\n"), binary=False)
    return [weights, info]
