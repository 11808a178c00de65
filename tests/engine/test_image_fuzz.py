"""Property-based fuzzing of image reading (hypothesis): random bytes, truncated or bit-flipped PNG and JPEG
files, huge declared sizes and unusual modes (16-bit, CMYK, palette, with alpha) through ``Predictor.predict``.
The property: a prediction, or one ``DataError`` line; never another exception."""
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import resnets
from resnets import DataError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4, "P": 1, "I;16": 1, "LA": 2}


@pytest.fixture(scope="module")
def predictor():
    return resnets.Predictor("resnet20_cifar10", mode="fused")


def _predict(predictor, data: bytes):
    try:
        out = predictor.predict(data, topk=2)
    except DataError as e:
        assert "\n" not in str(e) and str(e).startswith("cannot read image")
        return None
    assert len(out) == 1 and len(out[0]) == 2 and abs(sum(p for _, p in out[0])) <= 1 + 1e-6
    return out


def _encoded(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + (() if MODES[mode] == 1 else (MODES[mode],))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, shape[:2], dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), "L" if mode == "P" else None)
        img = img.convert(mode) if img.mode != mode else img
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(predictor, data):
    _predict(predictor, data)


@FUZZ
@given(mode=st.sampled_from(sorted(MODES)), w=st.integers(1, 80), h=st.integers(1, 80),
       fmt=st.sampled_from(["PNG", "JPEG", "TIFF", "BMP"]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4), seed=st.integers(0, 99))
def test_damaged_images_of_every_mode(predictor, mode, w, h, fmt, cut, flips, seed):
    try:
        data = bytearray(_encoded(mode, (w, h), fmt, seed))
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold: nothing to test
        return
    data = data[:max(1, int(len(data) * cut))] if cut < 0.9 else data
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    _predict(predictor, bytes(data))


@FUZZ
@given(w=st.integers(1, 2 ** 31 - 1), h=st.integers(1, 2 ** 31 - 1))
def test_huge_declared_sizes_are_refused_without_decoding(predictor, w, h):
    """A PNG whose header declares up to 2^31 x 2^31 pixels (a decompression bomb) and holds almost nothing."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    out = _predict(predictor, png)
    assert out is None or w * h <= 4096  # only a tiny image could be read from 64 bytes
