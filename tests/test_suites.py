"""The shipped suites: each runs end to end with --limit 8 on fixtures in the real formats, on a CPU."""

from pathlib import Path

import pandas as pd
import pytest

from ctxenc.cli import main
from ctxenc.results.paper import PaperRow, paper_comparison, ranking_lines
from tests.real_formats import write_cifar

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_cifar_linear_with_limit(tmp_path, capsys):
    write_cifar(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--limit", "8", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"linear_probe", "knn"} and set(records["seed"]) == {0, 1, 2}
    assert set(records["pretrain_dataset"]) == {"cifar10"}
    assert "--limit 8" in (out / "report.md").read_text()
    # A full run into the same folder would mix records of two sizes: refused.
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "holds a run made with --limit 8, this one has no --limit" in capsys.readouterr().err


def test_paper_comparison_by_hand():
    records = pd.DataFrame({
        "pretext": ["random", "random", "context_encoder", "context_encoder"],
        "mask": ["none", "none", "random_region", "random_region"],
        "loss": ["none", "none", "l2", "l2"],
        "seed": [0, 1, 0, 1],
        "protocol": ["finetune"] * 4,
        "metric": ["mAP"] * 4,
        "value": [0.50, 0.52, 0.40, 0.44],
    })
    rows = [PaperRow("random", "finetune", "mAP", 53.3, source="T2"),
            PaperRow("context_encoder/random_region/l2", "finetune", "mAP", 56.5, source="T2"),
            PaperRow("autoencoder", "finetune", "mAP", 53.8, source="T2")]
    table = paper_comparison(records, rows).set_index("method")
    assert table.loc["random", "ours"] == "51.0 ± 1.4" and table.loc["random", "ours − paper"] == pytest.approx(-2.3)
    assert table.loc["context_encoder/random_region/l2", "ours"] == "42.0 ± 2.8"
    assert table.loc["autoencoder", "ours"] == "not run" and table.loc["autoencoder", "seeds"] == 0
    assert list(table.index) == ["random", "autoencoder", "context_encoder/random_region/l2"]
    (line,) = ranking_lines(records, rows)
    assert "paper context_encoder/random_region/l2 > random; ours random > context_encoder/random_region/l2" in line
    assert "a different order from the paper's" in line
