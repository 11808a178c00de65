"""JPEG decoding straight to an array through libjpeg-turbo's own interface (``simplejpeg``), with Pillow as the
fallback: the same pixels as Pillow's decoder (both are libjpeg-turbo with its default accurate DCT and
upsampling; a test checks they agree exactly), in about two thirds of the time, because nothing goes through a
Pillow image and its copy to NumPy.

``decode_jpeg`` answers ``None`` wherever it cannot promise Pillow's pixels — not a JPEG, a colour space other
than YCbCr or greyscale (CMYK, YCCK), damaged data, or ``simplejpeg`` not installed — and the caller decodes with
Pillow, which also gives any error its usual message.
"""
from __future__ import annotations

import numpy as np

try:
    import simplejpeg
except ImportError:  # an optional speed-up: Pillow decodes everything on its own
    simplejpeg = None

COLOUR_SPACES = ("YCbCr", "Gray")  # what libjpeg-turbo converts to RGB or grey exactly as Pillow does


def reduction(width: int, height: int, need: tuple[int, int] | None) -> int:
    """The factor (1, 2, 4 or 8) by which a ``width`` x ``height`` JPEG may be decoded and still be at least
    ``need`` pixels: Pillow's ``Image.draft`` rule, so that both decoders give images of the same size."""
    if need is None:
        return 1
    most = min(width // max(1, need[0]), height // max(1, need[1]))  # 0 where the image is smaller than need
    return next((k for k in (8, 4, 2) if most >= k), 1)


def decode_jpeg(data: bytes, channels: int = 3, need: tuple[int, int] | None = None) -> np.ndarray | None:
    """``(H, W, channels)`` uint8 pixels of a JPEG, decoded at the largest reduction that keeps it at least
    ``need`` (width, height) pixels, or ``None`` where Pillow should decode it."""
    if simplejpeg is None or data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in COLOUR_SPACES:
            return None
        k = reduction(width, height, need)
        pixels = simplejpeg.decode_jpeg(data, "RGB" if channels == 3 else "GRAY", min_factor=k,
                                        min_width=-(-width // k), min_height=-(-height // k))
    except ValueError:  # damaged, or a kind of JPEG it does not read
        return None
    return pixels if pixels.ndim == 3 else pixels[..., None]
