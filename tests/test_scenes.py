import pytest
import torch

from ctxenc.data import load_dataset
from ctxenc.data.scenes import IGNORE, ScenesConfig, make_scenes
from ctxenc.errors import UserError

SPEC = {"name": "fashion_scenes", "train_scenes": 40, "test_scenes": 24, "size": 32}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_scenes_are_deterministic_and_seeded(fmnist_root):
    items = load_dataset("fashion_mnist", "train", fmnist_root)
    a = make_scenes(items.images, items.labels, 12, ScenesConfig(), seed=3)
    b = make_scenes(items.images, items.labels, 12, ScenesConfig(), seed=3)
    c = make_scenes(items.images, items.labels, 12, ScenesConfig(), seed=4)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["images"], c["images"])


def test_labels_maps_and_boxes_agree(fmnist_root):
    data = load_dataset(SPEC, "train", fmnist_root)
    assert data.images.shape == (40, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.task == "multi_label" and data.labels.shape == (40, 10)
    assert data.class_maps.shape == (40, 32, 32)
    for i in range(len(data)):
        cmap, labels = data.class_maps[i].long(), data.labels[i]
        assert labels.sum() >= 1
        present = set((cmap[(cmap > 0) & (cmap != IGNORE)] - 1).unique().tolist())
        assert present == set(torch.nonzero(labels).flatten().tolist())  # every labelled class has pixels, no others
        boxes = [b for b in data.boxes[i].tolist() if b[0] >= 0]
        for k in present:
            inside = torch.zeros(32, 32, dtype=torch.bool)
            for c, x0, y0, x1, y1 in boxes:
                if c == k:
                    inside[y0 : y1 + 1, x0 : x1 + 1] = True
            assert inside[cmap == k + 1].all()  # the boxes of a class contain all its pixels
        for c, x0, y0, x1, y1 in boxes:
            assert labels[c] == 1 and 0 <= x0 <= x1 < 32 and 0 <= y0 <= y1 < 32
            box = cmap[y0 : y1 + 1, x0 : x1 + 1]
            assert (box == c + 1).any()  # a box is drawn around pixels of its class
            # its edges touch pixels of its class: it is tight
            assert (box[0] == c + 1).any() and (box[-1] == c + 1).any() and (box[:, 0] == c + 1).any() and (box[:, -1] == c + 1).any()


def test_cached_on_disk_keyed_by_parameters(fmnist_root, cache):
    first = load_dataset(SPEC, "test", fmnist_root)
    files = list(cache.rglob("test.pt"))
    assert len(files) == 1
    again = load_dataset(SPEC, "test", fmnist_root)
    assert torch.equal(first.images, again.images) and list(cache.rglob("test.pt")) == files
    other = load_dataset({**SPEC, "seed": 1}, "test", fmnist_root)
    assert len(list(cache.rglob("test.pt"))) == 2 and not torch.equal(first.images, other.images)


def test_train_and_test_scenes_come_from_their_own_items(fmnist_root):
    train = load_dataset(SPEC, "train", fmnist_root)
    test = load_dataset(SPEC, "test", fmnist_root)
    assert not torch.equal(train.images[:24], test.images)


def test_bad_options_are_one_sentence(fmnist_root):
    with pytest.raises(UserError, match="did you mean 'train_scenes'"):
        load_dataset({**SPEC, "train_scene": 3}, "train", fmnist_root)
    with pytest.raises(UserError, match="min_items <= max_items"):
        load_dataset({**SPEC, "min_items": 3, "max_items": 2}, "train", fmnist_root)
