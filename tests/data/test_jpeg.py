"""JPEG decoding through libjpeg-turbo's own interface: Pillow's pixels exactly, or None where Pillow must decode."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from resnets.data import jpeg
from resnets.data.folder import decode_image, upright_pixels

pytestmark = pytest.mark.skipif(jpeg.simplejpeg is None, reason="simplejpeg is not installed (Pillow decodes)")


def _jpeg(w=301, h=207, mode="RGB", subsampling=2, exif=None) -> bytes:
    """A photo-like JPEG: gradients, a disc and noise, so that every 8x8 block has detail."""
    rng = np.random.default_rng(w * h)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([255 * x / w, 255 * y / h, 128 + 100 * (((x - w / 2) ** 2 + (y - h / 2) ** 2) < (h / 3) ** 2)], -1)
    arr = (arr + rng.normal(0, 10, arr.shape)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **({} if mode != "RGB" else {"subsampling": subsampling}),
             **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _pillow(data: bytes, mode: str, need=None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.draft(mode, need)
        return np.asarray(img.convert(mode))


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("divide", [None, 1.5, 2, 3, 5, 9])
def test_the_pixels_are_pillows_at_every_reduction(subsampling, divide):
    data = _jpeg(subsampling=subsampling)
    need = None if divide is None else (math.ceil(301 / divide), math.ceil(207 / divide))
    for channels, mode in ((3, "RGB"), (1, "L")):
        out = jpeg.decode_jpeg(data, channels, need)
        want = _pillow(data, mode, need)
        assert out is not None and out.shape == (*want.shape[:2], channels)
        assert np.array_equal(out.reshape(want.shape), want)


def test_a_greyscale_jpeg_comes_out_as_pillow_converts_it():
    data = _jpeg(mode="L")
    assert np.array_equal(jpeg.decode_jpeg(data, 3), _pillow(data, "RGB"))


def test_the_reduction_is_pillows_draft_rule():
    for w, h, need, k in [(500, 375, None, 1), (500, 375, (250, 187), 2), (500, 375, (250, 188), 1),
                          (4000, 3000, (224, 224), 8), (1000, 800, (300, 100), 2),
                          (320, 240, (256, 256), 1)]:  # smaller than asked: whole
        assert jpeg.reduction(w, h, need) == k


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + b"0" * 64,  # not a JPEG
    _jpeg()[:200],  # cut short
    _jpeg(mode="CMYK"),  # a colour space that Pillow converts its own way
])
def test_what_it_cannot_promise_is_left_to_pillow(data):
    assert jpeg.decode_jpeg(data) is None


def test_an_image_smaller_than_asked_is_decoded_whole():
    data = _jpeg(120, 90)
    assert np.array_equal(jpeg.decode_jpeg(data, 3, (256, 256)), _pillow(data, "RGB", (256, 256)))
    assert decode_image(data, 256).shape == (3, 256, 256)


def test_an_orientation_tag_is_honoured_on_the_fast_path_too():
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to be upright
    data = _jpeg(exif=exif)
    with Image.open(io.BytesIO(data)) as img:
        upright = upright_pixels(img, data)
    assert upright.shape == (301, 207, 3)
    assert np.array_equal(upright, np.rot90(_pillow(data, "RGB"), -1))
    assert decode_image(data, None, keep_shape=True).shape == (3, 301, 207)


def test_pillow_decodes_where_simplejpeg_is_missing(monkeypatch):
    data = _jpeg()
    fast = decode_image(data, 64)
    monkeypatch.setattr(jpeg, "simplejpeg", None)
    assert jpeg.decode_jpeg(data) is None
    assert np.array_equal(decode_image(data, 64), fast)
