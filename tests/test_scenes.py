import pytest
import torch

from ctxenc.data import load_dataset
from ctxenc.data.scenes import (IGNORE, SPLITS, ScenesConfig, load_fashion_scenes, make_scenes, place_item,
                                 silhouettes, split_items)
from ctxenc.errors import UserError

SPEC = {"name": "fashion_scenes", "train_scenes": 40, "test_scenes": 24, "size": 32}
SMALL = ScenesConfig(pool_scenes=30, train_scenes=20, test_scenes=10, labelled_items=64)


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


def test_an_items_dark_interior_is_labelled_not_ignored():
    # A bright frame around a dark centre (as a dress's dark print): the centre belongs to the item.
    item = torch.zeros(1, 28, 28)
    item[:, 2:26, 2:26] = 0.9
    item[:, 8:20, 8:20] = 0.02
    solid = torch.zeros(1, 28, 28)
    solid[:, 2:26, 2:26] = 1.0  # the filled silhouette, as `make_scenes` computes it
    assert torch.equal(silhouettes((item * 255).round().to(torch.uint8)[None])[0].float(), solid)
    cfg = ScenesConfig(min_scale=0.875, max_scale=0.875)  # side 28 on a 32 px canvas: no resampling
    canvas, owner, fringe = place_item(torch.rand(3, 32, 32), torch.full((32, 32), -1), torch.zeros(32, 32, dtype=torch.bool),
                                       item, solid, 0, cfg, torch.Generator().manual_seed(0))
    inside = torch.zeros(32, 32, dtype=torch.bool)
    ys, xs = torch.nonzero(owner == 0, as_tuple=True)
    top, left = int(ys.min()), int(xs.min())
    inside[top + 1 : top + 23, left + 1 : left + 23] = True  # the frame's interior, one pixel in from its edge
    assert (owner[inside] == 0).all() and not fringe[inside].any()
    assert (owner == 0).sum() == 24 * 24


def test_pool_and_train_use_disjoint_items(fmnist_root):
    items = load_dataset("fashion_mnist", "train", fmnist_root)  # 256 items
    train, pool = split_items("train", SMALL, len(items)), split_items("pool", SMALL, len(items))
    assert set(range(len(items))[train]).isdisjoint(range(len(items))[pool])
    assert (train.start, train.stop, pool.start, pool.stop) == (0, 64, 64, 256)
    # The full-size default: the first 5,000 of the 60,000 train items for train scenes, the rest for the pool.
    assert split_items("train", ScenesConfig(), 60_000) == slice(0, 5000)
    assert split_items("pool", ScenesConfig(), 60_000) == slice(5000, 60_000)
    # Fewer than 2 * labelled_items items (tiny data): the first half is labelled.
    assert split_items("train", ScenesConfig(), 256) == slice(0, 128)
    # The scenes of a split are drawn from its own items only.
    scenes = load_fashion_scenes("train", SMALL, items)
    alone = make_scenes(items.images[:64], items.labels[:64], 20, SMALL, seed=SMALL.seed)
    assert torch.equal(scenes.images, alone["images"]) and torch.equal(scenes.class_maps, alone["class_maps"])


def test_three_splits_with_their_sizes_and_labels(fmnist_root):
    assert SPLITS == ("pool", "train", "test")
    train_items = load_dataset("fashion_mnist", "train", fmnist_root)
    test_items = load_dataset("fashion_mnist", "test", fmnist_root)
    pool = load_fashion_scenes("pool", SMALL, train_items)
    train = load_fashion_scenes("train", SMALL, train_items)
    test = load_fashion_scenes("test", SMALL, test_items)
    assert (len(pool), len(train), len(test)) == (30, 20, 10)
    assert pool.labels.shape == (30, 10) and pool.class_maps.shape == (30, 32, 32)  # the pool carries labels too
    assert pool.split == "pool"
    with pytest.raises(UserError, match="splits pool, train, test"):
        load_fashion_scenes("val", SMALL, train_items)
    with pytest.raises(UserError, match="labelled_items"):
        ScenesConfig(labelled_items=0)


def test_changing_one_split_does_not_redraw_another(fmnist_root, cache):
    items = load_dataset("fashion_mnist", "train", fmnist_root)
    load_fashion_scenes("train", SMALL, items)
    load_fashion_scenes("train", ScenesConfig(**{**SMALL.__dict__, "pool_scenes": 99}), items)
    assert len(list(cache.rglob("train.pt"))) == 1
