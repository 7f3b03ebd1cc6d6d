"""Readers of the real on-disk formats, on tiny fixtures written in those formats by the test."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ctxenc.data import dataset_tasks, eval_splits, load_dataset
from ctxenc.data.voc import CLASSES
from ctxenc.errors import UserError
from tests.real_formats import _palette, voc_block, write_cifar, write_imagefolder, write_stl10, write_voc


def block_colour(images: torch.Tensor, labels: torch.Tensor, i: int) -> bool:
    """Image i shows its class's colour in its class's cell of the 4x4 grid (as the writers draw it)."""
    k = int(labels[i])
    _, h, w = images[i].shape
    r, c = divmod(k % 16, 4)
    centre = images[i, :, r * h // 4 + h // 8, c * w // 4 + w // 8].numpy()
    return bool(np.abs(centre.astype(int) - _palette(k)).max() <= 8)


@pytest.mark.parametrize("variant,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickles(tmp_path, variant, classes):
    write_cifar(tmp_path, variant)
    train = load_dataset(variant, "train", tmp_path)
    test = load_dataset(variant, "test", tmp_path)
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (40, 3, 32, 32)
    assert train.num_classes == classes and train.task == "single_label"
    assert all(block_colour(train.images, train.labels, i) for i in range(len(train)))
    assert len(load_dataset(variant, "train", tmp_path, limit=7)) == 7


def test_cifar_accepts_the_batches_folder_itself(tmp_path):
    write_cifar(tmp_path)
    assert len(load_dataset("cifar10", "test", tmp_path / "cifar-10-batches-py")) == 40


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": subprocess.Popen}, f)  # a global outside the allowed numpy types
    with pytest.raises(UserError, match="refusing to load subprocess.Popen"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar_missing_batch_names_the_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="expected .*cifar-10-batches-py/data_batch_3"):
        load_dataset("cifar10", "train", tmp_path)


def test_stl10_binaries_are_column_major(tmp_path):
    write_stl10(tmp_path)
    train = load_dataset("stl10", "train", tmp_path)
    assert train.images.shape == (40, 3, 96, 96) and train.labels.min() >= 0 and train.labels.max() <= 9
    assert all(block_colour(train.images, train.labels, i) for i in range(len(train)))
    unlabeled = load_dataset("stl10", "unlabeled", tmp_path)
    assert unlabeled.task == "unlabeled" and unlabeled.labels is None and len(unlabeled) == 24
    both = load_dataset("stl10", "train+unlabeled", tmp_path)
    assert len(both) == 64 and torch.equal(both.images[:40], train.images) and torch.equal(both.images[40:], unlabeled.images)
    assert len(load_dataset("stl10", "train+unlabeled", tmp_path, limit=45)) == 45


def test_stl10_truncated_images_and_mismatched_labels(tmp_path):
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-5])
    with pytest.raises(UserError, match="not a whole number of 3x96x96 images"):
        load_dataset("stl10", "test", tmp_path)
    (folder / "train_y.bin").write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="2 labels for 40 images"):
        load_dataset("stl10", "train", tmp_path)


def test_voc2007_multilabel_with_difficult_objects(tmp_path):
    write_voc(tmp_path, "2007")
    assert eval_splits("voc2007") == ("trainval", "test")
    data = load_dataset("voc2007", "trainval", tmp_path, load_size=64)
    assert data.images.shape == (16, 3, 64, 64) and data.labels.shape == (16, 20) and data.task == "multi_label"
    person, car, dog = CLASSES.index("person"), CLASSES.index("car"), CLASSES.index("dog")
    # The writer: image i holds classes[i % 4] and, for odd i, classes[(i + 1) % 4] (difficult when i % 3 == 0).
    assert data.labels[0].tolist() == [1.0] + [0.0] * 19
    assert data.labels[1, car] == 1 and data.labels[1, dog] == 1
    assert data.labels[3, person] == 1 and data.labels[3, 0] == -1  # aeroplane only as a difficult object
    assert set(data.labels.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_voc2007_boxes_with_difficult_flags_on_the_warped_image(tmp_path):
    write_voc(tmp_path, "2007", splits={"trainval": 4})
    data = load_dataset("voc2007", "trainval", tmp_path, load_size=64)
    assert data.boxes.shape == (4, 2, 6) and data.boxes.dtype == torch.int16
    aeroplane, car, dog, person = (CLASSES.index(c) for c in ("aeroplane", "car", "dog", "person"))
    # Image 0: one aeroplane; image 3: a person and an aeroplane marked difficult (3 % 3 == 0).
    assert data.boxes[0, 0, 0] == aeroplane and data.boxes[0, 1].tolist() == [-1] * 6
    assert data.boxes[3, :, 0].tolist() == [person, aeroplane] and data.boxes[3, :, 5].tolist() == [0, 1]
    assert data.boxes[1, :, 5].tolist() == [0, 0]  # image 1: car and dog, neither difficult
    for i in range(4):
        xml = (tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / f"2007_{i + 1:06d}.xml").read_text()
        w, h = (int(xml.split(f"<{t}>")[1].split("<")[0]) for t in ("width", "height"))
        for row in data.boxes[i][data.boxes[i, :, 0] >= 0].tolist():
            top, bottom, left, right = voc_block(row[0], h, w)
            # Pixels left..right-1 span [left, right) in the file; warped by 64 / w they span [64 left / w, 64 right / w).
            assert row[1:5] == [64 * left // w, 64 * top // h, -(-64 * right // w) - 1, -(-64 * bottom // h) - 1]


def test_voc_box_without_coordinates_is_named(tmp_path):
    write_voc(tmp_path, "2007", splits={"trainval": 1})
    xml = tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "2007_000001.xml"
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>left").replace("</xmin>", "</xmin>"))
    with pytest.raises(UserError, match=r"2007_000001.xml has an object without a numeric bndbox/xmin"):
        load_dataset("voc2007", "trainval", tmp_path)


def test_voc2012_segmentation_maps(tmp_path):
    write_voc(tmp_path, "2012")
    data = load_dataset("voc2012_seg", "train", tmp_path, load_size=64)
    assert data.task == "segmentation" and data.num_classes == 21 and data.labels is None
    assert data.class_maps.shape == (16, 64, 64) and data.class_maps.dtype == torch.uint8
    assert set(data.class_maps.unique().tolist()) <= {0, 1, 7, 12, 15, 255}
    # Warped image and map stay aligned: the class's pixels show its colour.
    i = 0
    inside = data.class_maps[i] == 1
    colour = data.images[i][:, inside].float().mean(1).numpy()
    assert np.abs(colour - _palette(0)).max() < 12


def test_voc_segmentation_map_in_rgb_is_refused(tmp_path):
    write_voc(tmp_path, "2012", splits={"train": 2, "val": 2})
    png = next((tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"))
    Image.open(png).convert("RGB").save(png)
    with pytest.raises(UserError, match="palette PNGs"):
        load_dataset("voc2012_seg", "train", tmp_path, load_size=32)


def test_voc_wrong_root_names_the_expected_folder(tmp_path):
    with pytest.raises(UserError, match=r"expected .*VOCdevkit/VOC2007/JPEGImages"):
        load_dataset("voc2007", "test", tmp_path)
    write_voc(tmp_path, "2007", splits={"trainval": 2})
    with pytest.raises(UserError, match=r"expected .*ImageSets/Main/test.txt .*VOCtest_06-Nov-2007.tar"):
        load_dataset("voc2007", "test", tmp_path)


def test_voc_missing_annotation_names_it(tmp_path):
    write_voc(tmp_path, "2007", splits={"trainval": 3})
    xml = sorted((tmp_path / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[1]
    xml.unlink()
    with pytest.raises(UserError, match=f"annotation missing: expected .*{xml.name}"):
        load_dataset("voc2007", "trainval", tmp_path)


def test_imagefolder_labelled_with_mixed_modes_and_sizes(tmp_path):
    write_imagefolder(tmp_path / "animals")
    assert dataset_tasks("imagefolder:animals", tmp_path) == ("single_label",)
    train = load_dataset("imagefolder:animals", "train", tmp_path, load_size=48)
    test = load_dataset("imagefolder", "test", tmp_path / "animals", load_size=48)
    assert train.images.shape == (36, 3, 48, 48) and train.num_classes == 3 and len(test) == 36
    assert train.labels.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    limited = load_dataset("imagefolder:animals", "train", tmp_path, limit=4, load_size=48)
    assert sorted(set(limited.labels.tolist())) == [0, 1, 2]  # evenly spaced: every class appears


def test_imagefolder_flat_is_unlabeled_and_cached(tmp_path):
    write_imagefolder(tmp_path / "streets", classes=None, test=False)
    assert dataset_tasks("imagefolder:streets", tmp_path) == ("unlabeled",)
    first = load_dataset("imagefolder:streets", "train", tmp_path, load_size=32)
    assert first.labels is None and first.task == "unlabeled" and first.images.shape == (24, 3, 32, 32)
    entries = list((tmp_path / "cache" / "decoded").iterdir())
    assert len(entries) == 1
    again = load_dataset("imagefolder:streets", "train", tmp_path, load_size=32)
    assert torch.equal(first.images, again.images) and len(list((tmp_path / "cache" / "decoded").iterdir())) == 1
    # Replacing a file (written beside it, renamed over it) changes the key: the folder is decoded again.
    img = tmp_path / "streets" / "img000.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(img.with_name("new.png"))
    os.replace(img.with_name("new.png"), img)
    edited = load_dataset("imagefolder:streets", "train", tmp_path, load_size=32)
    assert edited.images[0, 0].min() == 255 and len(list((tmp_path / "cache" / "decoded").iterdir())) == 2


def test_imagefolder_errors(tmp_path):
    write_imagefolder(tmp_path / "mixed", classes=None, test=False)
    (tmp_path / "mixed" / "cls").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "mixed" / "cls" / "a.png")
    with pytest.raises(UserError, match="mixes class subfolders"):
        load_dataset("imagefolder:mixed", "train", tmp_path)
    write_imagefolder(tmp_path / "notest", test=False)
    with pytest.raises(UserError, match=r"no test split: expected .*notest/test or .*notest/val"):
        load_dataset("imagefolder:notest", "test", tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*bad.jpg"):
        load_dataset("imagefolder:broken", "train", tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagefolder:nowhere", "train", tmp_path)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UserError, match="valid names: fashion_mnist, fashion_scenes, cifar10, .*imagefolder:SUBFOLDER"):
        load_dataset("cifar11", "train")


def test_wrong_root_is_one_sentence_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ctxenc", "pretrain", "--pretext", "random", "--dataset", "cifar10",
                             "--data-root", str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{tmp_path}/cifar-10-batches-py/data_batch_1" in result.stderr
