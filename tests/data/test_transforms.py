"""Per-image transforms of streamed data: torchvision's crop rule, reduced-size decoding, determinism."""
import io

import numpy as np
import pytest
from PIL import Image

from resnets.data.folder import decode_image
from resnets.data.transforms import SampleTransform, random_resized_crop, rrc_box


def _photo(w=500, h=375, fmt="JPEG") -> bytes:
    """A smooth photo-like image (gradients and a disc), so that reduced-size decoding can be compared."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([255 * x / w, 255 * y / h, 128 + 100 * (((x - w / 2) ** 2 + (y - h / 2) ** 2) < (h / 3) ** 2)], -1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, fmt, quality=95)
    return buf.getvalue()


def test_rrc_box_stays_inside_and_follows_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, w, h = rrc_box(500, 375, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
        if (w, h) != (500, 375):  # not the fallback
            assert 0.08 * 500 * 375 * 0.95 <= w * h <= 500 * 375
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_rrc_box_falls_back_to_a_centre_crop_of_the_allowed_ratio():
    # a 1000x10 strip: no crop with a ratio in [3/4, 4/3] and an area >= 90% fits, so the fallback runs
    left, top, w, h = rrc_box(1000, 10, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert (w, h) == (13, 10) and left == (1000 - 13) // 2 and top == 0


def test_reduced_size_decoding_matches_a_full_decode():
    data = _photo()
    a = random_resized_crop(data, 64, (0.5, 0.5), (1.0, 1.0), False, np.random.default_rng(1))
    with Image.open(io.BytesIO(data)) as img:  # the same crop from the full-size decode
        rng = np.random.default_rng(1)
        left, top, w, h = rrc_box(500, 375, (0.5, 0.5), (1.0, 1.0), rng)
        full = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR, box=(left, top, left + w, top + h)))
    assert a.shape == (3, 64, 64) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - full.transpose(2, 0, 1).astype(int)).mean() < 3


def test_sample_transform_is_deterministic_per_sample_and_epoch():
    t = SampleTransform(256, 64, scale=(0.08, 1.0), flip=True, seed=3)
    data = _photo()
    assert np.array_equal(t(data, 0, 7), t(data, 0, 7))
    assert not np.array_equal(t(data, 0, 7), t(data, 1, 7))
    assert not np.array_equal(t(data, 0, 7), t(data, 0, 8))


def test_eval_transform_is_the_in_memory_storage_then_the_centre_crop():
    data = _photo(fmt="PNG")
    out = SampleTransform(64, 56)(data, 0, 0)
    stored = decode_image(data, 64)
    assert out.shape == (3, 56, 56) and np.array_equal(out, stored[:, 4:60, 4:60])


def test_grayscale_and_png_inputs_come_out_as_rgb():
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60), 200, np.uint8), "L").save(buf, "PNG")
    out = SampleTransform(32, 32, scale=(0.5, 1.0), flip=True)(buf.getvalue(), 0, 0)
    assert out.shape == (3, 32, 32) and (out == 200).all()


def test_undecodable_bytes_raise():
    with pytest.raises(OSError, match="cannot identify image"):
        SampleTransform(32, 32, scale=(0.5, 1.0))(b"not an image", 0, 0)
