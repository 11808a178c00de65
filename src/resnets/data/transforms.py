"""Per-image transforms of streamed data, run in the loader's worker processes: encoded bytes in, uint8 out.

Training with ``scale`` set: torchvision's RandomResizedCrop (an area drawn from ``scale``, a log-uniform
aspect ratio from ``ratio``, ten tries, else a centre crop of the allowed ratio) and a horizontal flip. A JPEG
is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 of its size that still gives the crop its output
resolution (``Image.draft``: a crop at least twice the output's side is decoded at half size or less).
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
import torch
import torch.nn.functional as F
from PIL import Image

from .augment import center_crop
from .folder import ORIENTATION, decode_image, upright_pixels


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
    """One training crop ``(C, size, size)`` uint8 of an encoded image, decoded no larger than it needs, then
    cropped and resized as torchvision's tensor transforms do (antialiased bilinear on uint8: PyTorch's
    vectorised kernel, twice as fast as Pillow's resize)."""
    with Image.open(io.BytesIO(data)) as img:
        turned = img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
        width, height = (img.height, img.width) if turned else img.size
        left, top, w, h = rrc_box(width, height, scale, ratio, rng)
        f = min(1.0, size / min(w, h))  # the factor the crop is resized by: a JPEG may be decoded that small
        need = (math.ceil(img.width * f), math.ceil(img.height * f)) if f < 1 else None
        pixels = upright_pixels(img, data, channels, need)
    sx, sy = pixels.shape[1] / width, pixels.shape[0] / height  # < 1 where the JPEG was decoded reduced
    x0, y0 = round(left * sx), round(top * sy)
    x1, y1 = max(x0 + 1, round((left + w) * sx)), max(y0 + 1, round((top + h) * sy))
    crop = torch.from_numpy(pixels[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None]  # (a writable copy of the crop)
    if crop.shape[-2:] != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if flip and rng.random() < 0.5:
        crop = crop.flip(-1)
    return crop[0].numpy()


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
