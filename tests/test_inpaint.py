import numpy as np
import pytest
from PIL import Image

from ctxenc.cli import main


@pytest.fixture
def checkpoint(fmnist_root, tmp_path):
    out = tmp_path / "ce"
    assert main(["pretrain", "--pretext", "context_encoder", "--mask", "center", "--data-root", str(fmnist_root),
                 "--max-steps", "2", "--batch-size", "32", "--out", str(out), "--no-progress"]) == 0
    return out / "checkpoint.pt"


def test_inpaint_a_small_png_and_skip_a_corrupt_file(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main(["inpaint", "--checkpoint", str(checkpoint), str(tmp_path / "small.png"), str(tmp_path / "broken.png"),
                 str(tmp_path / "photo.jpg"), "--out", str(out)])
    assert code == 2  # one input failed ...
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png is not a readable image" in err and "Traceback" not in err
    for name in ("small", "photo"):  # ... and the others were still processed
        result = Image.open(out / f"{name}_inpainted.png")
        assert result.size == (32, 32) and result.mode == "L"  # the model's input size and channels
        sheet = Image.open(out / f"{name}_side_by_side.png")
        assert sheet.size == (3 * 128 + 8, 128)
    assert not list(out.glob("broken*"))


def test_inpaint_keeps_the_context_outside_the_hole_and_border(checkpoint, tmp_path):
    image = np.full((32, 32), 200, dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "flat.png")
    assert main(["inpaint", "--checkpoint", str(checkpoint), str(tmp_path / "flat.png"), "--out", str(tmp_path / "o")]) == 0
    result = np.asarray(Image.open(tmp_path / "o" / "flat_inpainted.png"))
    outside = np.ones((32, 32), bool)
    outside[7:25, 7:25] = False  # the 16 px hole and its 1 px overlap border
    assert (result[outside] == 200).all()


def test_inpaint_with_a_mask_image(checkpoint, tmp_path):
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:16, :16] = 255  # the top-left corner after resizing to 32 px: rows/cols 0-7
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", "--checkpoint", str(checkpoint), "--mask", str(tmp_path / "mask.png"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "o")]) == 0
    result = np.asarray(Image.open(tmp_path / "o" / "a_inpainted.png"))
    assert (result[9:, :] == 90).all() and (result[:, 9:] == 90).all()


def test_an_empty_mask_is_one_sentence(checkpoint, tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["inpaint", "--checkpoint", str(checkpoint), "--mask", str(tmp_path / "mask.png"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no white (hole) pixels" in capsys.readouterr().err
