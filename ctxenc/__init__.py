"""ctxenc: Context Encoders (Pathak et al., CVPR 2016) as a feature-learning benchmark suite."""

__version__ = "0.1.0"
