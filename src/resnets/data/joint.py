"""Augmentation of image/mask pairs, the same geometry on both: a random rescale (bilinear for the image,
nearest for the mask), a random crop padded where the image is smaller (the mask's padding is ignored), a
random horizontal flip; then normalisation. torchvision's segmentation reference does the same."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import normalize
from .masks import IGNORE


def _rescale(image: torch.Tensor, mask: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return image, mask
    image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
    return image[0].round().clamp(0, 255).to(torch.uint8), mask[0, 0].to(torch.uint8)


@dataclass(frozen=True)
class JointAugment:
    """Training crops of ``crop_size`` from pairs rescaled by a factor drawn from ``scale``, flipped with
    ``hflip``; ``mean``/``std`` (0..1 scale) normalise the images."""

    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True

    def pair(self, image: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One uint8 pair (``(3, H, W)``, ``(H, W)``) made a ``crop_size`` square training pair."""
        lo, hi = self.scale
        image, mask = _rescale(image, mask, lo + (hi - lo) * torch.rand((), generator=g).item())
        c = self.crop_size
        h, w = image.shape[-2:]
        if h < c or w < c:  # pad bottom and right: black image, ignored mask
            image = F.pad(image, (0, max(0, c - w), 0, max(0, c - h)), value=0)
            mask = F.pad(mask, (0, max(0, c - w), 0, max(0, c - h)), value=IGNORE)
            h, w = image.shape[-2:]
        top = int(torch.randint(h - c + 1, (), generator=g))
        left = int(torch.randint(w - c + 1, (), generator=g))
        image, mask = image[:, top:top + c, left:left + c], mask[top:top + c, left:left + c]
        if self.hflip and torch.rand((), generator=g).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask

    def batch(self, images: list[torch.Tensor], masks: list[torch.Tensor], g: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented training pairs stacked: float images ``(N, 3, c, c)``, normalised, and long masks."""
        pairs = [self.pair(i, m, g) for i, m in zip(images, masks)]
        x = normalize(torch.stack([p[0] for p in pairs]), torch.tensor(self.mean), torch.tensor(self.std))
        return x, torch.stack([p[1] for p in pairs]).long()
