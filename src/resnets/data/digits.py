"""The embedded default: scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels), upscaled to 32x32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .types import ImageSet

SIZE = 32


def load_digits_set() -> tuple[ImageSet, list[str]]:
    """All digits as one ``ImageSet`` of 1x32x32 uint8 images (bilinear upscaling), and the class names."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) * (255.0 / 16.0)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    files = [f"digits[{i}]" for i in range(len(labels))]
    return ImageSet(images, labels, files), [str(c) for c in bunch.target_names]
