"""`ctxenc inpaint`: holes filled at the image's own size, the default hole the checkpoint's own
mask kind, output names that cannot collide."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ctxenc.cli import main
from tests.conftest import make_fashion_mnist


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two context encoders (center and random-region masks) and a `random` checkpoint, 32 px grayscale."""
    base = tmp_path_factory.mktemp("inpaint")
    data = make_fashion_mnist(base / "fmnist", n_train=64, n_test=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTXENC_CACHE", str(base / "cache"))
        for name, args in (("center", ["--pretext", "context_encoder", "--mask", "center", "--max-steps", "2"]),
                           ("region", ["--pretext", "context_encoder", "--mask", "random_region", "--max-steps", "2"]),
                           ("random", ["--pretext", "random"])):
            assert main(["pretrain", *args, "--data-root", str(data), "--batch-size", "16", "--out", str(base / name),
                         "--no-progress"]) == 0
    return base


def noise(path, shape, seed=0):
    """A uint8 noise image (H, W) or (H, W, 3): no fill reproduces it, so changed pixels show the hole."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return np.asarray(Image.open(path))  # as decoded (a JPEG is lossy)


def red_hole(sheet_path, shape) -> np.ndarray:
    """The hole drawn in red on the first panel of a side-by-side sheet of a grayscale image, bool (H, W)."""
    h, w = shape
    scale = max(1, math.ceil(128 / min(h, w)))
    panel = np.asarray(Image.open(sheet_path))[: h * scale, : w * scale][::scale, ::scale]
    return (panel == (255, 0, 0)).all(-1)


def test_small_png_and_jpeg_at_their_own_size_and_a_corrupt_file(runs, tmp_path, capsys):
    small = noise(tmp_path / "small.png", (20, 30))
    photo = noise(tmp_path / "photo.jpg", (50, 40, 3), seed=1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main(["inpaint", "--checkpoint", str(runs / "center"), str(tmp_path / "small.png"), str(tmp_path / "broken.png"),
                 str(tmp_path / "photo.jpg"), "--out", str(out)])
    assert code == 2  # one input failed ...
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png is not a readable image" in err and "Traceback" not in err
    for name, pixels, mode in (("small.png", small, "L"), ("photo.jpg", photo, "RGB")):  # ... the others still ran
        result = Image.open(out / f"{name}.inpainted.png")
        assert result.mode == mode and np.asarray(result).shape == pixels.shape  # the input's own size and colors
        h, w = pixels.shape[:2]
        scale = max(1, math.ceil(128 / min(h, w)))
        assert Image.open(out / f"{name}.side_by_side.png").size == (3 * w * scale + 8, h * scale)
    assert not list(out.glob("broken*"))


def test_only_the_hole_changes_and_the_fill_is_at_full_resolution(runs, tmp_path):
    # A mask image at the image's size: the hole is known pixel for pixel.
    pixels = noise(tmp_path / "wide.png", (45, 70, 3))
    mask = np.zeros((45, 70), dtype=np.uint8)
    mask[14:30, 30:41] = 255  # inside the central 45 x 45 square (columns 12-56)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", "--checkpoint", str(runs / "region"), "--mask", str(tmp_path / "mask.png"),
                 str(tmp_path / "wide.png"), "--out", str(tmp_path / "o")]) == 0
    result = np.asarray(Image.open(tmp_path / "o" / "wide.png.inpainted.png"))
    hole = mask == 255
    assert result.shape == pixels.shape
    assert (result[~hole] == pixels[~hole]).all()  # every pixel outside the hole is the input's, exactly
    assert (result[hole] != pixels[hole]).any(-1).mean() > 0.9  # the hole is filled
    # The fill is the model's output resized bicubically (smooth), not noise copied through.
    filled = result[14:30, 30:41].astype(float)
    assert np.abs(np.diff(filled, axis=1)).mean() < 0.5 * np.abs(np.diff(pixels[14:30, 30:41].astype(float), axis=1)).mean()


def test_the_default_hole_of_a_center_checkpoint_is_its_center_square(runs, tmp_path):
    pixels = noise(tmp_path / "a.png", (64, 96))
    assert main(["inpaint", "--checkpoint", str(runs / "center" / "checkpoint.pt"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "o")]) == 0
    expected = np.zeros((64, 96), dtype=bool)
    expected[16:48, 32:64] = True  # the central 64 px square's middle half: the model's 16 of 32 px, at 2x
    assert (red_hole(tmp_path / "o" / "a.png.side_by_side.png", (64, 96)) == expected).all()
    result = np.asarray(Image.open(tmp_path / "o" / "a.png.inpainted.png"))
    assert (result[~expected] == pixels[~expected]).all()


def test_the_default_hole_of_a_random_region_checkpoint_is_a_seeded_random_region(runs, tmp_path):
    noise(tmp_path / "a.png", (64, 64))
    holes = {}
    for run, seed in (("first", "0"), ("again", "0"), ("other", "1")):
        assert main(["inpaint", "--checkpoint", str(runs / "region"), "--seed", seed, str(tmp_path / "a.png"),
                     "--out", str(tmp_path / run)]) == 0
        holes[run] = red_hole(tmp_path / run / "a.png.side_by_side.png", (64, 64))
    center = np.zeros((64, 64), dtype=bool)
    center[16:48, 16:48] = True
    assert (holes["first"] != center).any()  # not the centre square it never trained on ...
    assert 0.15 < holes["first"].mean() < 0.35  # ... but its 20-30% random regions
    assert (holes["first"] == holes["again"]).all() and (holes["first"] != holes["other"]).any()  # --seed decides
    # An explicit kind still works: the centre square on request.
    assert main(["inpaint", "--checkpoint", str(runs / "region"), "--mask", "center", str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "c")]) == 0
    assert (red_hole(tmp_path / "c" / "a.png.side_by_side.png", (64, 64)) == center).all()


def test_output_names_cannot_collide(runs, tmp_path, capsys):
    png = noise(tmp_path / "a.png", (30, 30))
    jpg = noise(tmp_path / "a.jpg", (40, 40, 3))
    assert main(["inpaint", "--checkpoint", str(runs / "center"), str(tmp_path / "a.png"), str(tmp_path / "a.jpg"),
                 "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a.jpg.inpainted.png", "a.jpg.side_by_side.png", "a.png.inpainted.png", "a.png.side_by_side.png"]
    assert np.asarray(Image.open(tmp_path / "o" / "a.png.inpainted.png")).shape == png.shape  # each from its own input
    assert np.asarray(Image.open(tmp_path / "o" / "a.jpg.inpainted.png")).shape == jpg.shape
    # Two files of one name in different folders would write the same outputs: refused before any work.
    (tmp_path / "b").mkdir()
    noise(tmp_path / "b" / "a.png", (30, 30))
    capsys.readouterr()
    assert main(["inpaint", "--checkpoint", str(runs / "center"), str(tmp_path / "a.png"), str(tmp_path / "b" / "a.png"),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "share the file name a.png, so their outputs would collide" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_a_mask_image_outside_what_the_model_sees_and_an_empty_mask(runs, tmp_path, capsys):
    noise(tmp_path / "wide.png", (32, 64))
    mask = np.zeros((32, 64), dtype=np.uint8)
    mask[:8, :8] = 255  # the left edge: outside the central 32 x 32 square
    Image.fromarray(mask).save(tmp_path / "edge.png")
    assert main(["inpaint", "--checkpoint", str(runs / "center"), "--mask", str(tmp_path / "edge.png"), str(tmp_path / "wide.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "outside the image's central 32 x 32 px square" in capsys.readouterr().err
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "empty.png")
    assert main(["inpaint", "--checkpoint", str(runs / "center"), "--mask", str(tmp_path / "empty.png"), str(tmp_path / "wide.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no white (hole) pixels" in capsys.readouterr().err


def test_other_checkpoints_and_devices_are_one_sentence(runs, tmp_path, capsys):
    noise(tmp_path / "a.png", (32, 32))
    assert main(["inpaint", "--checkpoint", str(runs / "random"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "was pretrained with random, and only context_encoder checkpoints fill holes" in err and " a random " not in err
    if not torch.cuda.is_available():
        assert main(["inpaint", "--checkpoint", str(runs / "center"), "--device", "cuda", str(tmp_path / "a.png"),
                     "--out", str(tmp_path / "o")]) == 2
        assert "--device cuda asks for a GPU" in capsys.readouterr().err
