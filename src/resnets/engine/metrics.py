"""Classification metrics from logits: top-1/top-5, loss, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Metrics:
    split: str
    n: int
    loss: float
    top1: float
    top5: float
    per_class: list[ClassMetrics] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted

    def summary(self) -> dict[str, float | int | str]:
        return {"split": self.split, "n": self.n, "loss": self.loss, "top1": self.top1, "top5": self.top5}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], split: str) -> Metrics:
    logits, labels = logits.float().cpu(), labels.cpu()
    k = len(classes)
    topk = logits.topk(min(5, k), dim=1).indices
    pred = topk[:, 0]
    confusion = torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp_min(1)
    recall = tp / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    per_class = [ClassMetrics(c, precision[i].item(), recall[i].item(), f1[i].item(), int(confusion[i].sum()))
                 for i, c in enumerate(classes)]
    return Metrics(
        split=split, n=len(labels),
        loss=F.cross_entropy(logits, labels).item() if len(labels) else float("nan"),
        top1=(pred == labels).double().mean().item() * 100,
        top5=(topk == labels[:, None]).any(1).double().mean().item() * 100,
        per_class=per_class, confusion=confusion.tolist(),
    )


def format_metrics(m: Metrics) -> str:
    """The table that ``resnets eval`` prints."""
    lines = [f"{m.split} top-1 {m.top1:.2f}%  top-5 {m.top5:.2f}%  loss {m.loss:.4f}  ({m.n} images)", "",
             f"{'class':<16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    lines += [f"{c.name[:16]:<16} {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>7.3f} {c.support:>8}"
              for c in m.per_class]
    width = max(5, max(len(str(v)) for row in m.confusion for v in row) + 1)
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * 16 + "".join(f"{i:>{width}}" for i in range(len(m.confusion)))]
    lines += [f"{i:>2} {m.per_class[i].name[:12]:<13}" + "".join(f"{v:>{width}}" for v in row)
              for i, row in enumerate(m.confusion)]
    return "\n".join(lines)
