"""The shipped suites: each runs end to end with --limit 8 on fixtures in the real formats, on a CPU."""

from pathlib import Path

import pandas as pd
import pytest

from ctxenc.cli import main
from tests.real_formats import write_cifar, write_imagefolder, write_stl10, write_voc

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def markdown_table(report: str, heading: str) -> dict[str, dict[str, str]]:
    """The first table after `heading` in a Markdown report: {first cell: {column title: cell}}."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]  # rows[1] is the |:---| rule
    return {row[0]: dict(zip(header, row)) for row in body}


def test_cifar_linear_with_limit(tmp_path, capsys):
    write_cifar(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--limit", "8", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"linear_probe", "knn"} and set(records["seed"]) == {0}  # first seed only
    assert set(records["pretrain_dataset"]) == {"cifar10"} and set(records["limit"]) == {8}
    assert "--limit 8" in (out / "report.md").read_text()
    console = capsys.readouterr().out
    assert console.count("plumbing check: first seed only, 3 steps, 8 images per split — not a result") == 1
    # A full run into the same folder would mix records of two sizes: refused.
    assert main(["bench", str(BENCHMARKS / "cifar_linear.yaml"), "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "holds a run made with --limit 8, this one has no --limit" in capsys.readouterr().err


@pytest.mark.slow
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
    # The paper's numbers sit in the row of the method they belong to, beside our own measurement of it.
    beside = markdown_table((out / "report.md").read_text(), "## The paper's table beside ours")
    columns = {"voc07_classification": ("VOC07 classification mAP", "map@100%", "56.5"),
               "voc07_detection": ("VOC07 detection mAP", "map", "44.5"),
               "voc12_segmentation": ("VOC12 segmentation mIoU", "miou", "30.0")}
    ours = beside["context_encoder/random_region/l2"]
    assert ours["paper row"] == "Context encoder"
    for protocol, (title, metric, paper) in columns.items():
        measured = records.query("method == 'context_encoder/random_region/l2' and protocol == @protocol and metric == @metric")
        assert ours[f"{title} (paper)"] == paper
        assert ours[f"{title} (ours)"] == f"{100 * measured['value'].item():.1f} (n = 1)", (title, ours)
    assert beside["random"]["VOC07 classification mAP (paper)"] == "53.3"


@pytest.mark.slow
def test_paper_table1_with_limit(tmp_path):
    data = tmp_path / "data"
    write_imagefolder(data / "paris_streetview", classes=None, n_flat=8)
    out = tmp_path / "out"
    assert main(["bench", str(BENCHMARKS / "paper_table1.yaml"), "--limit", "8", "--data-root", str(data),
                 "--out", str(out), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"inpainting"} and set(records["loss"]) == {"l2", "l2+adv"}
    report = (out / "report.md").read_text()
    assert "--limit 8" in report
    # The paper's PSNR of its adversarial context encoder, beside our PSNR of ours.
    row = markdown_table(report, "## Table 1")["Context encoder, l2+adv"]
    psnr = records.query("loss == 'l2+adv' and metric == 'context_encoder/psnr'")["value"].item()
    assert row["paper PSNR (dB)"] == "18.58" and row["PSNR (dB)"] == f"{psnr:.2f} (n = 1)", row


def test_a_control_naming_a_row_the_suite_lacks_is_refused_before_any_work(tmp_path, capsys):
    suite = tmp_path / "ctl.yaml"
    suite.write_text("suite: ctl\npretexts: [{name: random}, {name: autoencoder}]\nprotocols: [knn]\n"
                     "report: {controls: {comparison: [supervised, random]}}\n")
    assert main(["bench", str(suite), "--limit", "8", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "report control ['supervised', 'random']" in err and "'supervised', which is not a row" in err
    assert not (tmp_path / "out").exists()
