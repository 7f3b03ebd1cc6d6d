import os
import subprocess
import sys

import pandas as pd
import pytest

from ctxenc.cli import main


def test_pretrain_then_evaluate_end_to_end(fmnist_root, tmp_path, capsys):
    out = tmp_path / "ce"
    assert main(["pretrain", "--pretext", "context_encoder", "--mask", "random_block", "--dataset", "fashion_mnist",
                 "--data-root", str(fmnist_root), "--epochs", "2", "--batch-size", "32", "--out", str(out), "--no-progress"]) == 0
    assert (out / "checkpoint.pt").is_file() and not (out / "last.pt").exists()
    for protocol in ("linear_probe", "knn"):
        assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--protocol", protocol,
                     "--dataset", "fashion_mnist", "--data-root", str(fmnist_root), "--out", str(out)]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"linear_probe", "knn"}
    row = records[(records["protocol"] == "linear_probe") & (records["metric"] == "accuracy")].iloc[0]
    assert row["pretext"] == "context_encoder" and row["mask"] == "random_block" and row["loss"] == "l2"
    assert row["value"] > 0.5  # the fixture's classes are bars at different rows: easy


def test_adversarial_pretraining_logs_both_losses(fmnist_root, tmp_path):
    out = tmp_path / "adv"
    assert main(["pretrain", "--pretext", "context_encoder", "--adversarial", "--data-root", str(fmnist_root),
                 "--max-steps", "2", "--batch-size", "32", "--out", str(out), "--no-progress"]) == 0
    log = pd.read_json(out / "log.jsonl", lines=True)
    assert {"loss_rec", "loss_adv", "loss_d"} <= set(log.columns)


@pytest.mark.slow
def test_bench_and_report(fmnist_root, tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "suite: tiny\nseeds: [0, 1]\ntrain: {epochs: 1, batch_size: 64}\n"
        "pretexts: [{name: random}, {name: autoencoder}, {name: context_encoder, mask: center}]\n"
        "protocols: [{protocol: knn, k: 5}, {protocol: linear_probe, max_iter: 20}]\n"
    )
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--out", str(out), "--data-root", str(fmnist_root), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert len(records[records["metric"] == "accuracy"]) == 3 * 2 * 2
    for name in ("table.md", "bars.png", "inpainting.png", "report.md", "suite.yaml"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert "context_encoder/center/l2" in table and "±" in table
    # A re-run finds every record and trains nothing.
    before = (out / "records.csv").read_text()
    assert main(["bench", str(suite), "--out", str(out), "--data-root", str(fmnist_root), "--no-progress"]) == 0
    assert (out / "records.csv").read_text() == before


def test_unknown_suite_key_suggests_the_closest(tmp_path, capsys):
    suite = tmp_path / "typo.yaml"
    suite.write_text("suite: typo\nseed: [0]\n")
    assert main(["bench", str(suite), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'seed'" in err and "did you mean 'seeds'?" in err


def test_missing_data_is_one_sentence_and_exit_2(tmp_path):
    env = {**os.environ, "CTXENC_DATA": str(tmp_path / "empty")}
    result = subprocess.run([sys.executable, "-m", "ctxenc", "pretrain", "--pretext", "autoencoder", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "--data-root" in result.stderr and "--download" in result.stderr
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", ["pretrain", "evaluate", "bench", "report", "inpaint", "export"])
def test_help_explains_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: ctxenc " + command in capsys.readouterr().out


@pytest.mark.slow
def test_scenes_bench_table2_report(fmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "scenes.yaml"
    suite.write_text(
        "suite: tiny_scenes\n"
        "dataset: {name: fashion_scenes, pool_scenes: 64, train_scenes: 64, test_scenes: 32}\n"
        "seeds: [0, 1]\nthreads: 1\ntrain: {epochs: 1, batch_size: 32}\n"
        "pretexts: [{name: random}, {name: context_encoder, mask: center}]\n"
        "protocols:\n"
        "  - {protocol: finetune, label_fractions: [0.5, 1.0], lrs: [1.0e-3], max_epochs: 1, min_steps: 2, batch_size: 16}\n"
        "  - {protocol: segmentation, label: seg_frozen, mode: frozen, lrs: [1.0e-2], max_epochs: 1, batch_size: 16}\n"
        "  - {protocol: linear_probe, label: layerwise, stages: [conv1, conv3], weight_decays: [1.0e-3], max_iter: 5}\n"
        "report:\n"
        "  paper: table2\n"
        "  columns:\n"
        "    - {title: cls mAP, protocol: finetune, metric: map@100%, paper: VOC07 classification mAP}\n"
        "    - {title: seg mIoU, protocol: seg_frozen, metric: miou, paper: VOC12 segmentation mIoU}\n"
        "  comparisons: [[context_encoder/center/l2, random]]\n"
    )
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--out", str(out), "--data-root", str(fmnist_root), "--no-progress"]) == 0
    records = pd.read_csv(out / "records.csv")
    assert set(records["protocol"]) == {"finetune", "seg_frozen", "layerwise"}
    assert {"map@50%", "map@100%", "miou", "pixel_accuracy", "map@conv1", "map@conv3"} <= set(records["metric"])
    for name in ("table.md", "bars.png", "scenes.png", "label_fraction-finetune.png", "layerwise-layerwise.png", "report.md"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "Random Gaussian" in report and "53.3" in report  # the paper's table beside ours
    assert "Does **context_encoder/center/l2** beat **random**?" in report and "95% CI" in report
    # One cell re-run with the same seed gives the same numbers.
    again = tmp_path / "again"
    assert main(["bench", str(suite), "--out", str(again), "--data-root", str(fmnist_root), "--no-progress"]) == 0
    pd.testing.assert_series_equal(pd.read_csv(again / "records.csv")["value"], records["value"])


def test_report_column_needs_protocol_and_metric(tmp_path, fmnist_root):
    out = tmp_path / "o"
    out.mkdir()
    (out / "records.csv").write_text("suite,dataset,pretext,encoder,mask,loss,seed,protocol,metric,value,pretrain_seconds,eval_seconds,checkpoint\n"
                                     "s,fashion_mnist,random,small,none,none,0,knn,accuracy,0.5,0,0,x\n")
    (out / "suite.yaml").write_text("suite: s\nreport: {columns: [{title: t, metric: accuracy}]}\n")
    assert main(["report", str(out)]) == 2
