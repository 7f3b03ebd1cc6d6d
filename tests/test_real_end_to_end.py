"""pretrain -> evaluate through the CLI on each real on-disk format, and the protocol/task check."""

import pandas as pd
import pytest

from ctxenc.cli import main
from tests.real_formats import write_cifar, write_imagefolder, write_stl10, write_voc


def run_pair(tmp_path, root, dataset, pretrain_args, protocol, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--dataset", dataset, "--data-root", str(root), "--out", str(out), "--no-progress",
                 "--max-steps", "2", "--batch-size", "8", *pretrain_args]) == 0
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--protocol", protocol, "--dataset", dataset,
                 "--data-root", str(root), "--out", str(out)]) == 0
    records = pd.read_csv(out / "records.csv")
    return records.set_index("metric")["value"]


def test_cifar10_context_encoder_then_linear_probe(tmp_path, capsys):
    write_cifar(tmp_path)
    values = run_pair(tmp_path, tmp_path, "cifar10", ["--pretext", "context_encoder", "--encoder", "small"],
                      "linear_probe", capsys)
    assert values["accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_stl10_unlabeled_pretraining_with_augmentation_then_linear_probe(tmp_path, capsys):
    write_stl10(tmp_path)
    values = run_pair(tmp_path, tmp_path, "stl10", ["--pretext", "autoencoder", "--split", "train+unlabeled", "--augment",
                                                     "--input-size", "32"], "linear_probe", capsys)
    assert values["accuracy"] > 0.5


def test_imagefolder_with_a_timm_backbone_then_knn(tmp_path, capsys):
    write_imagefolder(tmp_path / "animals")
    values = run_pair(tmp_path, tmp_path, "imagefolder:animals",
                      ["--pretext", "context_encoder", "--encoder", "timm:resnet18", "--input-size", "64"], "knn", capsys)
    assert values["accuracy"] > 0.6  # 3 classes


def test_flat_imagefolder_pretrains_alexnet_but_cannot_be_probed(tmp_path, capsys):
    write_imagefolder(tmp_path / "streets", classes=None, n_flat=8, test=False)
    out = tmp_path / "alex"
    assert main(["pretrain", "--dataset", "imagefolder:streets", "--data-root", str(tmp_path), "--encoder", "alexnet",
                 "--pretext", "context_encoder", "--max-steps", "1", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--protocol", "linear_probe",
                 "--dataset", "imagefolder:streets", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "protocol 'linear_probe' needs single-label or multi-label data, but imagefolder:streets is unlabeled; protocols for unlabeled data: inpainting." in err


def test_knn_on_multilabel_voc_is_refused_before_loading(tmp_path, capsys):
    write_voc(tmp_path, "2007", splits={"trainval": 2})  # no test split: the check must come first
    write_cifar(tmp_path)
    out = tmp_path / "c"
    assert main(["pretrain", "--pretext", "random", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--protocol", "knn", "--dataset", "voc2007",
                 "--data-root", str(tmp_path), "--out", str(out)]) == 2
    assert "protocol 'knn' needs single-label data, but voc2007 is multi-label" in capsys.readouterr().err


def write_protocol(tmp_path, text):
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return str(path)


def test_voc2007_finetune_gives_map(tmp_path, capsys):
    write_voc(tmp_path, "2007")
    protocol = write_protocol(tmp_path, "protocol: finetune\nlrs: [3.0e-3]\nmax_epochs: 3\nmin_steps: 0\nbatch_size: 8\n")
    values = run_pair(tmp_path, tmp_path, "voc2007", ["--pretext", "context_encoder", "--input-size", "32"], protocol, capsys)
    assert 0 < values["map@100%"] <= 1 and "val_map@100%" in values


def test_voc2012_segmentation_gives_miou(tmp_path, capsys):
    write_voc(tmp_path, "2012")
    protocol = write_protocol(tmp_path, "protocol: segmentation\nmode: frozen\nlrs: [1.0e-2]\nmax_epochs: 3\nbatch_size: 8\n")
    values = run_pair(tmp_path, tmp_path, "voc2012_seg", ["--pretext", "autoencoder", "--input-size", "32"], protocol, capsys)
    assert 0 < values["miou"] <= 1 and 0 < values["pixel_accuracy"] <= 1
    assert "iou/0" in values  # background is a class
