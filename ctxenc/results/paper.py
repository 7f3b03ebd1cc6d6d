"""The paper's published numbers that reports show beside ours (see PAPER.md), and which of our
rows each of the paper's rows corresponds to."""

from __future__ import annotations

from dataclasses import dataclass

CLASSIFICATION, DETECTION, SEGMENTATION = "VOC07 classification mAP", "VOC07 detection mAP", "VOC12 segmentation mIoU"


@dataclass(frozen=True)
class PaperTable:
    """rows: paper row -> {column: value}, in the paper's order; ours: our method -> paper row,
    where a key ending in "/" matches every method it prefixes (`random/` -> `random/init=pytorch`)."""

    rows: dict[str, dict[str, str | float]]
    ours: dict[str, str]

    def row_of(self, method: str) -> str | None:
        """The paper row our `method` sits beside, or None."""
        if method in self.ours:
            return self.ours[method]
        return next((row for key, row in self.ours.items() if key.endswith("/") and method.startswith(key)), None)

    def value(self, method: str, column: str) -> float | None:
        """The paper's number in `column` for the row matching our `method`, or None."""
        row = self.row_of(method)
        value = self.rows.get(row, {}).get(column) if row else None
        return value if isinstance(value, (int, float)) else None


# Pathak et al. 2016, Table 2: transfer to PASCAL VOC with an AlexNet encoder. The paper's
# feature-learning context encoder used random-region masks and the L2 loss over the hole.
TABLE2 = PaperTable(
    rows={
        "ImageNet": {"supervision": "1000 class labels", "pretraining time": "3 days",
                     CLASSIFICATION: 78.2, DETECTION: 56.8, SEGMENTATION: 48.0},
        "Random Gaussian": {"supervision": "initialization", "pretraining time": "< 1 minute",
                            CLASSIFICATION: 53.3, DETECTION: 43.4, SEGMENTATION: 19.8},
        "Autoencoder": {"supervision": "–", "pretraining time": "14 hours",
                        CLASSIFICATION: 53.8, DETECTION: 41.9, SEGMENTATION: 25.2},
        "Agrawal et al.": {"supervision": "egomotion", "pretraining time": "10 hours",
                           CLASSIFICATION: 52.9, DETECTION: 41.8},
        "Wang et al.": {"supervision": "motion", "pretraining time": "1 week", CLASSIFICATION: 58.7, DETECTION: 47.4},
        "Doersch et al.": {"supervision": "relative context", "pretraining time": "4 weeks",
                           CLASSIFICATION: 55.3, DETECTION: 46.6},
        "Context encoder": {"supervision": "context", "pretraining time": "14 hours",
                            CLASSIFICATION: 56.5, DETECTION: 44.5, SEGMENTATION: 30.0},
    },
    ours={"supervised": "ImageNet", "random": "Random Gaussian", "random/": "Random Gaussian", "autoencoder": "Autoencoder",
          "context_prediction": "Doersch et al.", "context_encoder/random_region/l2": "Context encoder"},
)

PAPER_TABLES = {"table2": TABLE2}
