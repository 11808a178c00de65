"""Segmentation metrics from a confusion matrix of pixels: mean intersection over union (mIoU, over the classes
present in the labels or the predictions), pixel accuracy and each class's IoU; ignored pixels count nowhere."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data.masks import IGNORE


def pixel_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts (int64): row the true class, column the predicted one, over the pixels not ignored."""
    keep = target != IGNORE
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


@dataclass
class SegMetrics:
    split: str
    classes: list[str]
    confusion: torch.Tensor  # (K, K) pixel counts
    images: int
    loss: float | None = None

    @property
    def iou(self) -> list[float | None]:
        """Each class's IoU in percent; None for a class neither labelled nor predicted."""
        c = self.confusion.double()
        inter, union = c.diag(), c.sum(0) + c.sum(1) - c.diag()
        return [100 * float(i / u) if u > 0 else None for i, u in zip(inter, union)]

    @property
    def miou(self) -> float:
        present = [v for v in self.iou if v is not None]
        return sum(present) / len(present) if present else 0.0

    @property
    def pixel_acc(self) -> float:
        total = int(self.confusion.sum())
        return 100 * float(self.confusion.diag().sum()) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "miou": round(self.miou, 3),
                "pixel_acc": round(self.pixel_acc, 3), "loss": self.loss,
                "iou": {c: (round(v, 3) if v is not None else None) for c, v in zip(self.classes, self.iou)}}


def format_seg_metrics(m: SegMetrics) -> str:
    lines = [f"{m.split}: mIoU {m.miou:.2f}%  pixel accuracy {m.pixel_acc:.2f}%  ({m.images} images)"]
    width = max(len(c) for c in m.classes)
    lines += [f"  {c:<{width}}  IoU {v:6.2f}%" if v is not None else f"  {c:<{width}}  (absent)"
              for c, v in zip(m.classes, m.iou)]
    return "\n".join(lines)
