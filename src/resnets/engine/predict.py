"""Model outputs over a split, batch by batch: logits of images in memory or streamed (with test-time views, under
autocast, shared among distributed processes), and the metrics they give."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import BatchAugment, ImageSet
from ..data.stream import StreamLoader, StreamSet
from ..errors import ResnetsError
from .distributed import Dist
from .metrics import Metrics, classification_metrics


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ResnetsError("CUDA was asked for but is not available")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def tta_views(x: torch.Tensor, flip: bool, translate: bool) -> list[tuple[torch.Tensor, float]]:
    """Test-time views of a batch with their weights: the images, with ``translate`` also shifted by one pixel
    up-left and down-right (reflected borders; half the weight), and with ``flip`` each view mirrored too."""
    views = [(x, 1.0)]
    if translate:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [(x, 0.5), (padded[..., :-2, :-2], 0.25), (padded[..., 2:, 2:], 0.25)]
    if flip:
        views = [(v.flip(3), w / 2) for v, w in views] + [(v, w / 2) for v, w in views]
    return views


@torch.no_grad()
def predict_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   aug: BatchAugment, *, batch_size: int = 256, device: torch.device | str = "cpu",
                   precision: str = "fp32", tta_flip: bool = False, tta_translate: bool = False,
                   channels_last: bool = False, dist: Dist | None = None) -> torch.Tensor:
    """Logits for uint8 images, batch by batch (averaged over the ``tta_views`` of each batch).

    ``model`` is a module (run in eval mode, under ``precision`` autocast) or any function from
    normalised images to logits, such as an ``inference.prepare_inference`` runner. With ``dist``, each
    process computes its share of the images and every process gets all the logits.
    """
    if dist is not None and dist.world > 1:
        local = predict_logits(model, dist.share(images), aug, batch_size=batch_size, device=device,
                               precision=precision, tta_flip=tta_flip, tta_translate=tta_translate,
                               channels_last=channels_last)
        return dist.gather_shares(local, len(images))
    device = torch.device(device)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = aug.eval(images[i:i + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            y = sum((w * model(v).float() for v, w in tta_views(x, tta_flip, tta_translate)), torch.zeros(()))
        out.append(y.cpu())
    if was_training and isinstance(model, nn.Module):
        model.train()
    return torch.cat(out) if out else torch.zeros(0, 0)


def stream_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: StreamSet, aug: BatchAugment, *,
                  workers: int = 0, dist: Dist | None = None, batch_size: int = 256,
                  **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a streamed split; with ``dist``, each process reads its part and all get all."""
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    loader = StreamLoader(data, data.eval_transform(), batch_size, shuffle=False, rank=rank, world=world,
                          workers=workers)
    logits, labels = [], []
    try:
        for x, y in loader.batches():
            logits.append(predict_logits(model, x, aug, batch_size=batch_size, **kwargs))
            labels.append(y)
    finally:
        loader.close()
    logits_t = torch.cat(logits) if logits else torch.zeros(0, 0)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if dist is not None and dist.world > 1:
        return dist.concat(logits_t), dist.concat(labels_t)
    return logits_t, labels_t


def evaluate_split(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: ImageSet | StreamSet,
                   classes: list[str], aug: BatchAugment, split: str, *, workers: int = 0, **kwargs: Any) -> Metrics:
    if isinstance(data, StreamSet):
        return classification_metrics(*stream_logits(model, data, aug, workers=workers, **kwargs), classes, split)
    return classification_metrics(predict_logits(model, data.images, aug, **kwargs), data.labels, classes, split)
