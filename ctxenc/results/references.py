"""Trivial references: what a model scores without looking at the image.

Evaluators record them beside the real metric, named `<metric>_<reference>[@qualifier]`:
`miou_all_background` and `pixel_accuracy_all_background` (segmentation: predict background
everywhere), `map_class_prior` (multi-label: constant scores), `accuracy_majority` (single-label:
always the most frequent class). A method whose mean does not beat them has learned nothing a
table should call better, whatever it does against another method.
"""

from __future__ import annotations

import pandas as pd

from ctxenc.results.records import split_metric

REFERENCES = {"all_background": "all background", "class_prior": "class prior", "majority": "majority class"}


def reference_values(records: pd.DataFrame, protocol: str, metric: str) -> dict[str, float]:
    """{reference name: mean value} for `metric` of `protocol`; `map@10%` looks for
    `map_class_prior@10%`, then `map_class_prior`."""
    base, qualifier = split_metric(metric)
    rows = records[records["protocol"] == protocol]
    found = {}
    for suffix, name in REFERENCES.items():
        candidates = [f"{base}_{suffix}@{qualifier}", f"{base}_{suffix}"] if qualifier else [f"{base}_{suffix}"]
        for candidate in candidates:
            values = rows.loc[rows["metric"] == candidate, "value"].dropna()
            if not values.empty:
                found[name] = float(values.mean())
                break
    return found


def is_reference(metric: str) -> bool:
    """Whether `metric` names a trivial reference rather than a model's score."""
    base, _ = split_metric(metric)
    return any(base.endswith("_" + suffix) for suffix in REFERENCES)


def not_beaten(mean: float, references: dict[str, float]) -> list[tuple[str, float]]:
    """The references (name, value) that a method with this `mean` does not beat."""
    return [(name, value) for name, value in references.items() if not mean > value]
