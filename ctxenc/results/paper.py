"""The paper's published numbers that reports show beside ours (see PAPER.md)."""

from __future__ import annotations

# Pathak et al. 2016, Table 2: transfer to PASCAL VOC with an AlexNet encoder. Keys are our method
# names; the paper's feature-learning context encoder used random-region masks and the L2 loss.
TABLE2 = {
    "random": {"paper row": "Random Gaussian", "pretraining time": "< 1 minute", "VOC07 classification mAP": 53.3,
               "VOC07 detection mAP": 43.4, "VOC12 segmentation mIoU": 19.8},
    "autoencoder": {"paper row": "Autoencoder", "pretraining time": "14 hours", "VOC07 classification mAP": 53.8,
                    "VOC07 detection mAP": 41.9, "VOC12 segmentation mIoU": 25.2},
    "context_encoder/random_region/l2": {"paper row": "Context encoder", "pretraining time": "14 hours",
                                         "VOC07 classification mAP": 56.5, "VOC07 detection mAP": 44.5,
                                         "VOC12 segmentation mIoU": 30.0},
}

PAPER_TABLES = {"table2": TABLE2}
