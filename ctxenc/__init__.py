"""ctxenc: Context Encoders (Pathak et al., CVPR 2016) as a feature-learning benchmark suite.

The Python API (`ctxenc/api.py`, `docs/python.md`):

    from ctxenc import load_encoder, extract_features
    encoder = load_encoder("runs/ce")                  # a run folder or its checkpoint.pt
    features = extract_features(encoder, images)       # uint8 (N, C, H, W) -> (N, D), the probe's features

Both are imported on first use, so `import ctxenc` (and `ctxenc --help`) does not pay for torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "extract_features", "load_encoder"]


def __getattr__(name: str):
    if name in ("load_encoder", "extract_features"):
        from ctxenc import api

        return getattr(api, name)
    raise AttributeError(f"module 'ctxenc' has no attribute {name!r}")
