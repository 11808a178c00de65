"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced search
space") on whole batches, with timm's policy strings (``rand-m9-mstd0.5-inc1``) and its operations and
magnitude ranges: each image applies ``n`` operations drawn uniformly (with replacement), each with probability
0.5, at a magnitude drawn from N(m, mstd) clipped to [0, mmax]. The operations compute on [0, 255] floats and
round to whole values after each one, as PIL does on uint8 images; every random draw comes from the batch's
generator, so a resumed run sees the same images.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

FILL = 128.0  # what geometric operations show outside the image (timm's fill colour)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's "L"
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
       "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
INCREASING = {"Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"}  # with inc1


@dataclass(frozen=True)
class RandAugmentPolicy:
    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, text: str) -> "RandAugmentPolicy":
        """timm's policy string: ``rand`` then dash-separated ``m<magnitude>``, ``n<ops>``, ``mstd<std>``,
        ``mmax<max>``, ``inc<0|1>`` (e.g. ``rand-m7-mstd0.5``, ``rand-m9-mstd0.5-inc1``)."""
        parts = str(text).split("-")
        if parts[0] != "rand":
            raise ConfigError(f"RandAugment policy {text!r} must start with 'rand' (e.g. rand-m9-mstd0.5-inc1)")
        settings: dict[str, float] = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|mmax|inc|m|n)(\d+(?:\.\d+)?)", part)
            if m is None:
                raise ConfigError(f"RandAugment policy {text!r}: cannot read {part!r} (known: m, n, mstd, mmax, inc, "
                                  f"each followed by a number)")
            settings[m.group(1)] = float(m.group(2))
        policy = cls(magnitude=settings.get("m", 10.0), num_ops=int(settings.get("n", 2)),
                     magnitude_std=settings.get("mstd", 0.0), magnitude_max=settings.get("mmax", 10.0),
                     increasing=bool(settings.get("inc", 0)))
        if policy.num_ops < 1:
            raise ConfigError(f"RandAugment policy {text!r}: n must be at least 1")
        return policy


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: ``degenerate + factor * (x - degenerate)``, clipped."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 255)


def auto_contrast(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    scale = torch.where(hi > lo, 255 / (hi - lo).clamp(min=1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def equalize(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize, per image and channel: a lookup table from the cumulative histogram."""
    n, c = x.shape[:2]
    flat = x.round().clamp(0, 255).long().view(n * c, -1)
    out = torch.empty_like(flat)
    for i, v in enumerate(flat):
        hist = torch.bincount(v, minlength=256)
        last = hist[hist.nonzero()[-1]].item()
        step = (v.numel() - last) // 255
        if step == 0:
            out[i] = v
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(max=255)
        out[i] = lut[v]
    return out.view_as(x).to(x.dtype)


def invert(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 255 - x


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    shift = (8 - bits).view(-1, 1, 1, 1).to(x.dtype)
    return torch.floor(x / 2 ** shift) * 2 ** shift


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= threshold.view(-1, 1, 1, 1), 255 - x, x)


def solarize_add(x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 128, (x + add.view(-1, 1, 1, 1)).clamp(max=255), x)


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(_luma(x).round().expand_as(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _luma(x).round().mean((1, 2, 3), keepdim=True).add(0.5).floor()
    return _blend(mean.expand_as(x), x, factor)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre 5, sum 13) inside the image; the border stays."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5
    smooth = F.conv2d(x, (kernel / 13).expand(c, 1, 3, 3), groups=c, padding=1).round()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
    return _blend(degenerate, x, factor)


def pil_affine(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Each image through PIL's AFFINE transform: output pixel centre ``(X, Y)`` (from the top left) samples the
    input at ``(a X + b Y + c, d X + e Y + f)`` for its row ``coeffs = (a, b, c, d, e, f)``; bilinear, with
    ``FILL`` outside."""
    n, _, h, w = x.shape
    a, b, c, d, e, f = coeffs.to(x.dtype).unbind(1)
    theta = torch.stack([torch.stack([a, b * h / w, a + b * h / w + 2 * c / w - 1], 1),
                         torch.stack([d * w / h, e, e + d * w / h + 2 * f / h - 1], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL


def _coeffs(n: int, device: torch.device, **values: torch.Tensor | float) -> torch.Tensor:
    """Rows of the identity transform ``(1, 0, 0, 0, 1, 0)`` with the named entries replaced."""
    out = torch.tensor([1.0, 0, 0, 0, 1, 0], device=device).repeat(n, 1)
    for i, name in enumerate("abcdef"):
        if name in values:
            out[:, i] = values[name]
    return out


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise about the centre, as PIL's ``rotate``."""
    h, w = x.shape[-2:]
    t = (degrees * math.pi / 180).to(x.device)
    a, b, d, e = t.cos(), -t.sin(), t.sin(), t.cos()
    cx, cy = w / 2, h / 2
    return pil_affine(x, _coeffs(len(x), x.device, a=a, b=b, c=cx - a * cx - b * cy, d=d, e=e,
                                 f=cy - d * cx - e * cy))


def shear_x(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return pil_affine(x, _coeffs(len(x), x.device, b=s))


def shear_y(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return pil_affine(x, _coeffs(len(x), x.device, d=s))


def translate_x(x: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    return pil_affine(x, _coeffs(len(x), x.device, c=fraction * x.shape[-1]))


def translate_y(x: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    return pil_affine(x, _coeffs(len(x), x.device, f=fraction * x.shape[-2]))


Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FUNCTIONS: dict[str, Op] = {
    "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate, "Posterize": posterize,
    "Solarize": solarize, "SolarizeAdd": solarize_add, "Color": color, "Contrast": contrast,
    "Brightness": brightness, "Sharpness": sharpness, "ShearX": shear_x, "ShearY": shear_y,
    "TranslateXRel": translate_x, "TranslateYRel": translate_y}


def op_argument(name: str, level: torch.Tensor, sign: torch.Tensor, increasing: bool) -> torch.Tensor:
    """timm's level-to-argument of ``name`` for magnitudes ``level`` in [0, 10] (``sign``: +-1 per image)."""
    frac = level / 10
    if name == "Rotate":
        return 30 * frac * sign
    if name in ("ShearX", "ShearY"):
        return 0.3 * frac * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return 0.45 * frac * sign
    if name == "Posterize":
        bits = (frac * 4).floor()
        return 4 - bits if increasing else bits
    if name == "Solarize":
        threshold = (frac * 256).floor()
        return 256 - threshold if increasing else threshold
    if name == "SolarizeAdd":
        return (frac * 110).floor()
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (1 + 0.9 * frac * sign).clamp(min=0.1) if increasing else frac * 1.8 + 0.1
    return level  # AutoContrast, Equalize, Invert take none


def rand_augment(x: torch.Tensor, policy: RandAugmentPolicy, g: torch.Generator) -> torch.Tensor:
    """``policy`` applied to a batch of [0, 255] images (any float or uint8 tensor); float [0, 255] out."""
    x = x.float().clone()  # the caller's images stay as they were
    n = len(x)
    for _ in range(policy.num_ops):
        which = torch.randint(len(OPS), (n,), generator=g)
        apply = torch.rand(n, generator=g) < policy.prob
        if policy.magnitude_std >= 100:  # timm: uniform in [0, m]
            level = policy.magnitude * torch.rand(n, generator=g)
        else:
            level = policy.magnitude + policy.magnitude_std * torch.randn(n, generator=g)
        level = level.clamp(0, policy.magnitude_max)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        for k, name in enumerate(OPS):
            idx = ((which == k) & apply).nonzero().flatten()
            if len(idx):
                arg = op_argument(name, level[idx], sign[idx], policy.increasing and name in INCREASING)
                idx = idx.to(x.device)
                x[idx] = FUNCTIONS[name](x[idx], arg.to(x.device)).round().clamp(0, 255)
    return x
