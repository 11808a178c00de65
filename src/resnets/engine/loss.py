"""The training losses on class targets, hard (class indices) or soft (mixup/cutmix probabilities): cross-entropy,
and binary cross-entropy as "ResNet strikes back" trains with it (each class an independent sigmoid, timm's
``BinaryCrossEntropy``: one-hot or mixed targets, optional smoothing and a target threshold)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def soft_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices as one-hot rows in ``dtype`` (soft targets as they are), smoothed towards uniform by
    ``smoothing``."""
    if target.dim() == 1:
        target = F.one_hot(target, num_classes).to(dtype)
    return target * (1 - smoothing) + smoothing / num_classes if smoothing else target


def bce_loss(logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.0,
             target_thresh: float | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of every class's logit against its target probability; with ``target_thresh``
    the targets become 1 above it and 0 below (timm's ``bce_target_thresh``: mixed and smoothed targets turned
    back into labels, 0.2 in the RSB recipes)."""
    probs = soft_targets(target, logits.shape[1], smoothing, logits.dtype).to(logits.dtype)
    if target_thresh is not None:
        probs = (probs > target_thresh).to(probs.dtype)
    return F.binary_cross_entropy_with_logits(logits, probs)


def classification_loss(kind: str, logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.0,
                        target_thresh: float | None = None) -> torch.Tensor:
    """The loss ``kind`` ("ce" or "bce") of float32 ``logits`` against hard or soft ``target``."""
    if kind == "ce":
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    if kind == "bce":
        return bce_loss(logits, target, smoothing=smoothing, target_thresh=target_thresh)
    raise ConfigError(f"unknown loss {kind!r}: expected 'ce' or 'bce'")
