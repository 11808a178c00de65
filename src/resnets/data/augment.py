"""Augmentation of whole batches on the training device: uint8 images in, normalised float images out.

Every random draw comes from the generator passed in, so a batch's augmentation depends only on the
seed, the epoch and the step (and a resumed run sees exactly the same batches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .randaugment import RandAugmentPolicy, rand_augment


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = 4  # random crop after zero padding (the paper's CIFAR augmentation); 0 = off
    pad_mode: Literal["zeros", "reflect"] = "zeros"  # "reflect" mirrors the border instead
    hflip: bool = True
    rrc_scale: tuple[float, float] | None = None  # random-resized-crop area range, e.g. (0.08, 1.0); None = off
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_size: int | None = None  # output size of training crops and the evaluation centre crop
    jitter: float = 0.0  # brightness, contrast and saturation strength
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0 = off
    randaugment: str | None = None  # a RandAugment policy string (randaugment.py), after the crops and flips
    # Evaluation at another resolution than training's (FixRes: train at 160, test at 224): the stored image
    # resized so that a centre crop of test_size is test_crop_pct of it (None: the training crop's share)
    test_size: int | None = None
    test_crop_pct: float | None = None


def test_resize(stored: int, crop: int | None, test_size: int, test_crop_pct: float | None) -> int:
    """The side an image stored at ``stored`` pixels is resized to before the centre crop of ``test_size``:
    ``test_size / test_crop_pct``, where the percentage defaults to the training crop's share of the stored
    image (``crop / stored``: 224 of 256 is 0.875)."""
    pct = test_crop_pct if test_crop_pct is not None else (crop or stored) / stored
    return max(test_size, round(test_size / pct))


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (random draws) on ``device`` without waiting for the GPU's queue to drain."""
    return t.to(device, non_blocking=True)


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return _to(torch.rand(n, generator=g), device)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 255] float) images to ``(x / 255 - mean) / std`` in float32, as ``x * a + b`` in two passes
    over one new tensor (three allocating passes took 2-4x as long: a tenth of a streamed pipeline's time)."""
    scale, shift = (1 / (255.0 * std)).view(1, -1, 1, 1), (-mean / std).view(1, -1, 1, 1)
    y = x * scale if x.dtype == torch.float32 else x.float().mul_(scale)  # never the caller's tensor in place
    return y.add_(shift)


Pixels = TypeVar("Pixels", torch.Tensor, np.ndarray)


def center_crop(x: Pixels, size: int) -> Pixels:
    """The central ``size`` x ``size`` window of the last two dimensions (a view)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices mirrored into ``[0, n)`` at the borders, without repeating the edge (``F.pad``'s "reflect")."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator, size: int | None = None,
                pad_mode: str = "zeros") -> torch.Tensor:
    """Per-image random crop of ``size`` (default: the input size) from the batch padded by ``padding``
    pixels of zeros or, with ``pad_mode="reflect"``, of the mirrored image."""
    n, c, h, w = x.shape
    size = size or h
    dy = _to(torch.randint(0, h + 2 * padding - size + 1, (n,), generator=g), x.device)
    dx = _to(torch.randint(0, w + 2 * padding - size + 1, (n,), generator=g), x.device)
    ar = torch.arange(size, device=x.device)
    rows, cols = dy[:, None] + ar, dx[:, None] + ar  # in padded coordinates
    if pad_mode == "reflect":
        if padding >= min(h, w):
            raise ValueError(f"reflect padding {padding} must be smaller than the image ({h}x{w})")
        src, rows, cols = x, _reflect(rows - padding, h), _reflect(cols - padding, w)
    else:
        src = F.pad(x, (padding,) * 4)
    batch, channel = torch.arange(n, device=x.device), torch.arange(c, device=x.device)
    return src[batch[:, None, None, None], channel[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = _rand(len(x), g, x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        g: torch.Generator, flip: bool) -> torch.Tensor:
    """Inception-style crop (random area and aspect ratio) resized to ``size``, one affine grid per image."""
    n = len(x)
    area = scale[0] + (scale[1] - scale[0]) * _rand(n, g, x.device)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(n, g, x.device)
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (1 - w) * (2 * _rand(n, g, x.device) - 1)
    cy = (1 - h) * (2 * _rand(n, g, x.device) - 1)
    sign = torch.where(_rand(n, g, x.device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * sign, cx, h, cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation in ``[1 - strength, 1 + strength]``, on [0, 255] floats."""
    n = len(x)

    def factor() -> torch.Tensor:
        return (1 + strength * (2 * _rand(n, g, x.device) - 1)).view(n, 1, 1, 1)

    x = x * factor()
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
    if x.shape[1] == 3:
        gray = x.mean(dim=1, keepdim=True)
        x = gray + (x - gray) * factor()
    return x.clamp(0, 255)


def beta(alpha: float, g: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, seeded from ``g`` (torch's own Beta sampler takes no generator)."""
    seed = int(torch.randint(2**62, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix(x: torch.Tensor, target: torch.Tensor, alpha: float, cut: bool,
        g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (``cut=False``) or CutMix (``cut=True``) of the batch with a shuffled copy; soft targets out."""
    lam = beta(alpha, g)
    perm = _to(torch.randperm(len(x), generator=g), x.device)
    if cut:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * target + (1 - lam) * target[perm]


class BatchAugment:
    """Training and evaluation transforms for one dataset: ``train(x, y, g)`` and ``eval(x)``."""

    def __init__(self, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...], num_classes: int) -> None:
        self.cfg = cfg
        self.mean = torch.tensor(mean)
        self.std = torch.tensor(std)
        self.num_classes = num_classes
        self.randaugment = RandAugmentPolicy.parse(cfg.randaugment) if cfg.randaugment else None

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.device != x.device:  # moved once, not at every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return self.mean, self.std

    def train(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised images and targets (class indices, or soft targets under mixup/cutmix)."""
        cfg = self.cfg
        size = cfg.crop_size or x.shape[-1]
        if cfg.rrc_scale is not None:
            x = random_resized_crop(x.float(), size, cfg.rrc_scale, cfg.rrc_ratio, g, cfg.hflip)
        else:
            if cfg.crop_padding > 0 or size != x.shape[-1]:
                x = random_crop(x, cfg.crop_padding, g, size, cfg.pad_mode)
            if cfg.hflip:
                x = random_flip(x, g)
            if self.randaugment is not None or cfg.jitter > 0:
                x = x.float()  # (normalize converts uint8 itself, in one pass less)
        if self.randaugment is not None:
            x = rand_augment(x, self.randaugment, g)
        if cfg.jitter > 0:
            x = color_jitter(x, cfg.jitter, g)
        x = normalize(x, *self._stats(x))
        if cfg.mixup > 0 or cfg.cutmix > 0:
            target = F.one_hot(y, self.num_classes).float()
            use_cut = cfg.cutmix > 0 and (cfg.mixup == 0 or float(torch.rand(1, generator=g)) < 0.5)
            return mix(x, target, cfg.cutmix if use_cut else cfg.mixup, use_cut, g)
        return x, y

    def eval_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The part of the images that evaluation looks at (the centre crop, if any), unnormalised. With a
        ``test_size``, stored images are first resized (``test_resize``; images already at ``test_size``, as a
        streamed evaluation set decodes them, are kept)."""
        cfg = self.cfg
        if cfg.test_size is not None:
            if x.shape[-1] == cfg.test_size:
                return x
            side = test_resize(x.shape[-1], cfg.crop_size, cfg.test_size, cfg.test_crop_pct)
            if side != x.shape[-1]:
                x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True,
                                  align_corners=False).round().clamp(0, 255).to(x.dtype)
            return center_crop(x, cfg.test_size)
        size = cfg.crop_size
        return center_crop(x, size) if size is not None and size < x.shape[-1] else x

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised evaluation inputs: the centre crop (if any) of the images, no randomness."""
        x = self.eval_crop(x)
        return normalize(x, *self._stats(x))
