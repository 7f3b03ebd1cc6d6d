import pytest
import torch

from ctxenc.data.transforms import (IGNORE_INDEX, _copied_crops, _gathered_crops, crop_flip, crop_flip_draws, fit_label_maps,
                                    load_size_for, to_model_input)


def test_load_size_is_alexnets_256_for_227():
    assert load_size_for(227) == 256 and load_size_for(128) == 144 and load_size_for(32) == 36


def test_close_sizes_are_cropped_without_resampling():
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    x = to_model_input(images, 227)
    expected = images[..., 14:241, 14:241].float() / 127.5 - 1  # (256 - 227) // 2 = 14
    assert x.shape == (2, 3, 227, 227) and torch.equal(x, expected)


def test_far_sizes_are_resized_shorter_side_then_centre_cropped():
    images = torch.zeros(1, 1, 40, 80, dtype=torch.uint8)
    images[:, :, 20:] = 255  # bottom half white
    x = to_model_input(images, 20)  # 40x80 -> 20x40 -> centre 20x20
    assert x.shape == (1, 1, 20, 20)
    assert torch.all(x[0, 0, :9] == -1) and torch.all(x[0, 0, 11:] == 1)


def test_label_maps_stay_aligned_with_their_images():
    """Class 1 where the image is white, class 2 where it is black, 255 kept: after resizing
    (nearest for labels, bilinear for images) every class-1 pixel is still bright."""
    torch.manual_seed(0)
    maps = torch.full((1, 45, 70), 2, dtype=torch.int64)
    maps[:, 10:30, 20:50] = 1
    maps[:, 0, 0] = IGNORE_INDEX
    images = torch.where(maps == 1, 255, 0).to(torch.uint8).unsqueeze(1).expand(1, 3, 45, 70).contiguous()
    for size in (32, 90, 40):
        x, y = to_model_input(images, size), fit_label_maps(maps, size)
        assert y.shape == (1, size, size) and set(y.unique().tolist()) <= {1, 2, IGNORE_INDEX}
        assert x[0, 0][y[0] == 1].min() > 0 and x[0, 0][y[0] == 2].max() < 0


def test_label_maps_pad_with_ignore_and_keep_their_dtype():
    maps = torch.zeros(1, 30, 30, dtype=torch.uint8)
    y = fit_label_maps(maps, 32)
    assert y[0, 0, 0] == IGNORE_INDEX and y[0, 16, 16] == 0 and y.dtype == torch.uint8


def random_crop_flip(images, size, seed):
    return crop_flip(images, crop_flip_draws(len(images), images.shape[-2:], size, torch.Generator().manual_seed(seed)), size)


def test_crop_flip_takes_windows_of_the_stored_image():
    size = 32
    images = torch.randint(0, 256, (16, 3, load_size_for(size), load_size_for(size)), dtype=torch.uint8)
    out = random_crop_flip(images, size, 0)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32 and torch.equal(out, random_crop_flip(images, size, 0))
    full = images.float() / 127.5 - 1
    flipped = 0
    for i in range(16):
        windows = full[i].unfold(1, size, 1).unfold(2, size, 1)  # (3, 5, 5, 32, 32)
        match = lambda img: (windows == img[:, None, None]).flatten(3).all(-1).all(0).any()  # noqa: E731
        plain, mirror = match(out[i]), match(out[i].flip(-1))
        assert plain or mirror
        flipped += int(mirror and not plain)
    assert 2 <= flipped <= 14


def test_crop_flip_resizes_other_sizes_first():
    images = torch.randint(0, 256, (4, 3, 96, 130), dtype=torch.uint8)
    draws = crop_flip_draws(4, images.shape[-2:], 64, torch.Generator().manual_seed(1))
    assert draws[:, 0].max() <= 72 - 64 and draws[:, 1].max() <= 98 - 64  # crops of the image at 72 x 98
    out = crop_flip(images, draws, 64)
    assert out.shape == (4, 3, 64, 64) and out.min() >= -1 and out.max() <= 1


def test_a_gpus_one_gather_takes_the_crops_the_cpus_copies_take():
    x = torch.randint(0, 256, (6, 2, 40, 50), dtype=torch.uint8)
    draws = crop_flip_draws(6, (40, 50), 32, torch.Generator().manual_seed(2))
    assert draws[:, 2].any() and not draws[:, 2].all()  # both flipped and plain windows
    assert torch.equal(_copied_crops(x, draws, 32), _gathered_crops(x, draws, 32))
