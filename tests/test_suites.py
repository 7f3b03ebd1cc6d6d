"""The shipped suites: each runs end to end with --limit 8 on fixtures in the real formats, on a CPU."""

from pathlib import Path

import pandas as pd

from ctxenc.cli import main
from tests.real_formats import write_cifar, write_imagefolder, write_stl10, write_voc

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_cifar_linear_with_limit(tmp_path, capsys):
    write_cifar(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--limit", "8", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"linear_probe", "knn"} and set(records["seed"]) == {0}  # first seed only
    assert set(records["pretrain_dataset"]) == {"cifar10"}
    assert "--limit 8" in (out / "report.md").read_text()
    # A full run into the same folder would mix records of two sizes: refused.
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "holds a run made with --limit 8, this one has no --limit" in capsys.readouterr().err


def test_paper_table2_with_limit(tmp_path):
    data = tmp_path / "data"
    write_stl10(data, n_train=8, n_test=8, n_unlabeled=8)
    write_voc(data, "2007", splits={"trainval": 8, "test": 8})
    write_voc(data, "2012", splits={"train": 8, "val": 8})
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "paper_table2.yaml"), "--limit", "8", "--data-root", str(data),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"voc07_classification", "voc07_detection", "voc12_segmentation"}
    assert set(records["pretrain_dataset"]) == {"stl10"} and set(records["encoder"]) == {"alexnet"}
    assert {"map@100%", "map", "map_coco", "miou"} <= set(records["metric"])
    report = (out / "report.md").read_text()
    assert "## The paper's table beside ours" in report and "56.5" in report and "44.5" in report and "30" in report


def test_paper_table1_with_limit(tmp_path):
    data = tmp_path / "data"
    write_imagefolder(data / "paris_streetview", classes=None, n_flat=8)
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "paper_table1.yaml"), "--limit", "8", "--data-root", str(data),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"inpainting"} and set(records["loss"]) == {"l2", "l2+adv"}
    report = (out / "report.md").read_text()
    assert "18.58" in report and "--limit 8" in report  # the paper's PSNR beside ours
