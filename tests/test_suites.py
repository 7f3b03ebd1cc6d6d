"""The shipped suites: each runs end to end with --limit 8 on fixtures in the real formats, on a CPU."""

from pathlib import Path

import pandas as pd

from ctxenc.cli import main
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
