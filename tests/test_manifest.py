"""An image folder is listed once: later loads stat its directories, never its images; a changed folder is listed again."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ctxenc.data import manifest
from ctxenc.data.imagefolder import load
from ctxenc.io import cache_root
from tests.real_formats import write_imagefolder


@pytest.fixture
def folder(tmp_path):
    return write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=4, test=False)


@pytest.fixture
def settled(monkeypatch):
    """As if the folder had been written long before it was listed (see manifest.RACY_NS)."""
    monkeypatch.setattr(manifest, "RACY_NS", 0)


def touched_paths(monkeypatch, call) -> list[str]:
    """Every path `call()` stats, lists or opens (the os functions pathlib, PIL and numpy go through)."""
    seen = []
    for name in ("stat", "lstat", "scandir", "listdir", "open"):
        real = getattr(os, name)

        def spy(path=".", *args, _real=real, **kwargs):
            seen.append(os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    call()
    monkeypatch.undo()
    return seen


def image_files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if p.is_file()}


def test_second_load_touches_no_image_file(folder, settled, monkeypatch):
    first = load("imagefolder", "train", folder, load_size=16)
    seen = touched_paths(monkeypatch, lambda: load("imagefolder", "train", folder, load_size=16))
    assert not image_files(folder) & set(seen)
    assert set(seen) & {str(folder / "train" / "a"), str(folder / "train" / "b")}  # the folders are checked
    again = load("imagefolder", "train", folder, load_size=16)
    assert torch.equal(again.images, first.images) and again.labels.tolist() == [0] * 4 + [1] * 4
    load("imagefolder", "train", folder, limit=3, load_size=16)  # --limit: a subset of the same listing
    seen = touched_paths(monkeypatch, lambda: load("imagefolder", "train", folder, limit=3, load_size=16))
    assert not image_files(folder) & set(seen)


def test_the_old_way_would_have_been_caught(folder, settled, monkeypatch):
    """The spy sees a per-file stat: what every load did before the listing was stored."""
    seen = touched_paths(monkeypatch, lambda: [p.stat() for p in sorted((folder / "train" / "a").iterdir())])
    assert image_files(folder / "train" / "a") <= set(seen)


def test_an_added_image_relists_the_folder_with_one_line(folder, settled, capsys):
    load("imagefolder", "train", folder, load_size=16)
    assert capsys.readouterr().err == ""
    Image.fromarray(np.full((30, 30, 3), 77, np.uint8)).save(folder / "train" / "b" / "zzz.png")
    data = load("imagefolder", "train", folder, load_size=16)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"ctxenc: {(folder / 'train').resolve()} changed since it was last listed; listing its images again."
    assert data.labels.tolist() == [0] * 4 + [1] * 5 and bool((data.images[-1] == 77).all())
    load("imagefolder", "train", folder, load_size=16)
    assert capsys.readouterr().err == ""  # listed again once, then reused


@pytest.mark.parametrize("change", ["remove", "rename", "new_class", "nested_folder"])
def test_removed_renamed_and_new_folders_are_seen(folder, settled, capsys, change):
    load("imagefolder", "train", folder, load_size=16)
    train = folder / "train"
    if change == "remove":
        next(iter(sorted((train / "a").iterdir()))).unlink()
    elif change == "rename":
        first = sorted((train / "b").iterdir())[0]
        first.rename(train / "b" / ("zz" + first.name))  # moves to the end of class b
    elif change == "new_class":
        (train / "c").mkdir()
        Image.new("RGB", (20, 20)).save(train / "c" / "x.png")
    else:
        (train / "a" / "deeper").mkdir()
        Image.new("RGB", (20, 20)).save(train / "a" / "deeper" / "x.png")
    data = load("imagefolder", "train", folder, load_size=16)
    assert "changed since it was last listed" in capsys.readouterr().err
    counts = {"remove": [3, 4], "rename": [4, 4], "new_class": [4, 4, 1], "nested_folder": [5, 4]}[change]
    assert np.bincount(data.labels.numpy()).tolist() == counts and data.num_classes == len(counts)


def test_an_in_place_edit_is_seen_after_touching_its_folder(folder, settled, capsys):
    """The documented limit: rewriting a file under its name leaves its folder's times as they were."""
    first = load("imagefolder", "train", folder, load_size=16).images.clone()
    path = sorted((folder / "train" / "a").glob("*.png"))[0]
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path)  # PIL writes over the same file
    assert torch.equal(load("imagefolder", "train", folder, load_size=16).images, first)
    os.utime(folder / "train" / "a")  # `touch DIR/a`
    edited = load("imagefolder", "train", folder, load_size=16).images
    assert "changed since it was last listed" in capsys.readouterr().err
    assert bool((edited[0] == 200).all()) and torch.equal(edited[1:], first[1:])


def test_a_folder_changed_just_before_it_was_listed_is_listed_again(folder, capsys):
    """Racy: a change in the same timestamp tick as the listing would go unseen, so a fresh folder is listed twice."""
    first = load("imagefolder", "train", folder, load_size=16).images.clone()  # written just now: racy
    path = sorted((folder / "train" / "a").glob("*.png"))[0]
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    edited = load("imagefolder", "train", folder, load_size=16).images
    assert capsys.readouterr().err == ""  # nothing was seen to change: listed again silently
    assert bool((edited[0] == 200).all()) and torch.equal(edited[1:], first[1:])


def test_listing_is_stored_once_per_folder_in_the_readers_order(tmp_path, settled):
    root = tmp_path / "odd"
    for rel in ("a/x-1.png", "a/x/0.png", "a/x.png", "b/.hidden.png", "b/B.png", "b/a.PNG", "b/notes.txt", ".skip/c.png",
                "c/none.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            (root / rel).write_text("not an image")
        else:
            Image.new("RGB", (20, 20)).save(root / rel, format="PNG")
    listing = manifest.folder_listing(root)
    assert listing.classes == ("a", "b") and listing.counts == (3, 2)
    # The order the reader had before listings were stored (pathlib's, part by part), so --limit picks the same images.
    assert listing.files() == [root / "a/x/0.png", root / "a/x-1.png", root / "a/x.png", root / "b/B.png", root / "b/a.PNG"]
    assert len(list((cache_root() / "manifests").iterdir())) == 1
    assert manifest.folder_listing(root).digest == listing.digest


def test_a_damaged_file_list_is_listed_again(folder, settled):
    first = load("imagefolder", "train", folder, limit=3, load_size=16).images.clone()
    (files,) = (cache_root() / "manifests").glob("*/files.json")
    files.write_text("[]")
    again = load("imagefolder", "train", folder, limit=5, load_size=16)  # decodes: reads the list
    assert again.images.shape[0] == 5 and torch.equal(again.images[[0, 4]], first[[0, 2]])
