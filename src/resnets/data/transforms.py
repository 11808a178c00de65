"""Per-image transforms of streamed data, run in the loader's worker processes: encoded bytes in, uint8 out.

Training with ``scale`` set: torchvision's RandomResizedCrop (an area drawn from ``scale``, a log-uniform
aspect ratio from ``ratio``, ten tries, else a centre crop of the allowed ratio) and a horizontal flip. A JPEG
is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 of its size that still gives the crop its output
resolution (``Image.draft``): a 500x375 photo cropped to 224 is mostly decoded at half size, for free.
Otherwise, and for evaluation: ``decode_image`` (shorter side resized to ``size``, centre crop), then the
centre ``crop`` (256 -> 224 for ImageNet), exactly as the in-memory path stores and crops its images.
Every random draw comes from ``numpy.random.default_rng((seed, epoch, sample))``, so a sample's crop does not
depend on which worker decodes it.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .augment import center_crop
from .folder import MAX_PIXELS, _eight_bit, decode_image

ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by 90 degrees


def rrc_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random-resized crop of a ``width`` x ``height`` image (torchvision's rule)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    w, h = width, height  # ten misses: the central crop of the closest allowed aspect ratio
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(data: bytes, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        flip: bool, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """One training crop ``(C, size, size)`` uint8 of an encoded image, decoded no larger than it needs."""
    mode = "RGB" if channels == 3 else "L"
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"image too large ({img.width}x{img.height})")
        orientation = img.getexif().get(ORIENTATION, 1)
        width, height = (img.height, img.width) if orientation in (5, 6, 7, 8) else img.size
        left, top, w, h = rrc_box(width, height, scale, ratio, rng)
        if img.format == "JPEG":
            f = size / min(w, h)  # the factor the crop is resized by; draft picks a reduction >= it
            if f < 1:
                img.draft(mode, (math.ceil(img.width * f), math.ceil(img.height * f)))
        img.load()
        if orientation != 1:  # (exif_transpose and convert copy the image even when there is nothing to do)
            img = ImageOps.exif_transpose(img)
        img = _eight_bit(img)
        if img.mode != mode:
            img = img.convert(mode)
        sx, sy = img.width / width, img.height / height
        out = img.resize((size, size), Image.BILINEAR, box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
    if flip and rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@dataclass(frozen=True)
class SampleTransform:
    """What a worker does to each encoded image of a split.

    ``scale`` set (training): random-resized crops of ``crop`` pixels and flips. Otherwise the stored form of
    the in-memory path: ``decode_image`` at ``size``, then the centre ``crop`` (if any); the training
    augmentation (padded crops, flips) then runs on batches, as it does in memory.
    """

    size: int
    crop: int | None = None
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    seed: int = 0

    @property
    def out_size(self) -> int:
        return self.crop or self.size

    def __call__(self, data: bytes, epoch: int, sample: int) -> np.ndarray:
        if self.scale is not None:
            rng = np.random.default_rng((self.seed, epoch, sample))
            return random_resized_crop(data, self.out_size, self.scale, self.ratio, self.flip, rng)
        image = decode_image(data, self.size)
        return center_crop(image, self.crop) if self.crop and self.crop < self.size else image
