"""A segmentation network over whole images: the class of every pixel, the metrics of a split (``resnets eval``
on a segmentation checkpoint) and coloured masks with overlays (``resnets predict --task segment``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import normalize
from ..data.masks import IGNORE, MaskSet, encode_png, load_segmentation, voc_palette
from ..errors import CheckpointError, ResnetsError
from ..files import atomic_write
from ..models import get_model_spec
from ..models.source import Checkpoint, read_source
from .predict import autocast
from .segment_metrics import SegMetrics, pixel_confusion


def _same_size_runs(images: list[torch.Tensor], batch_size: int) -> Iterator[list[int]]:
    """Indices of consecutive images of one size, at most ``batch_size`` at a time."""
    run: list[int] = []
    for i, img in enumerate(images):
        if run and (len(run) == batch_size or img.shape != images[run[0]].shape):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


@torch.no_grad()
def segment(model: nn.Module, images: list[torch.Tensor], mean: Sequence[float], std: Sequence[float], *,
            batch_size: int = 16, device: torch.device | str = "cpu", precision: str = "fp32"
            ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, logits (K, H, W))`` of each uint8 image, normalised by ``mean`` and ``std`` (0..1 scale), at
    its own size (same-size images batched)."""
    mean_t, std_t = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    was_training = model.training
    model.eval()
    try:
        for run in _same_size_runs(images, batch_size):
            x = normalize(torch.stack([images[i] for i in run]).to(device), mean_t, std_t)
            with autocast(torch.device(device), precision):
                logits = model(x)["out"].float().cpu()
            yield from zip(run, logits)
    finally:
        model.train(was_training)


def evaluate_masks(model: nn.Module, split: MaskSet, classes: list[str], mean: Sequence[float],
                   std: Sequence[float], name: str, **kwargs: Any) -> SegMetrics:
    """mIoU, pixel accuracy, per-class IoU and the mean per-pixel loss of ``model`` on ``split``."""
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    loss_sum, pixels = 0.0, 0
    for i, logits in segment(model, split.images, mean, std, **kwargs):
        target = split.masks[i].long()
        confusion += pixel_confusion(logits.argmax(0), target, k)
        loss_sum += float(F.cross_entropy(logits[None], target[None], ignore_index=IGNORE, reduction="sum"))
        pixels += int((target != IGNORE).sum())
    return SegMetrics(name, classes, confusion, len(split), loss_sum / max(pixels, 1))


def segmenter(source: str | Path | Checkpoint) -> tuple[nn.Module, Checkpoint]:
    """The segmentation network of a checkpoint (eval mode, CPU) and the checkpoint; a classifier is refused."""
    ck = source if isinstance(source, Checkpoint) else read_source(source)
    ck.need("model", "classes")
    if get_model_spec(str(ck.model)).family != "segmentation":
        raise CheckpointError(f"{ck.source} holds the classifier {ck.model}, not a segmentation network: leave out "
                              f"--task segment")
    return ck.network(), ck


def checkpoint_stats(ck: Checkpoint) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std a checkpoint normalises images with."""
    if ck.mean is None or ck.std is None:
        raise CheckpointError(f"{ck.source} does not say how it normalises images: give a resnets checkpoint")
    return ck.mean, ck.std


def evaluate_segmentation(checkpoint: str | Path | Checkpoint, data: str | None = None, split: str = "val",
                          batch_size: int = 16, device: str = "cpu") -> SegMetrics:
    """A segmentation checkpoint's metrics on a split of ``data`` (default: the data it was trained on)."""
    model, ck = segmenter(checkpoint)
    source = data or ck.config.get("data")
    if not source:
        raise ResnetsError(f"{ck.source} does not name its data: give --data FOLDER")
    dataset = load_segmentation(source, val_size=ck.config.get("val_size"), seed=int(ck.config.get("seed", 0)),
                                classes=ck.classes)
    if dataset.classes != ck.classes:
        raise ResnetsError(f"{source} has the classes {', '.join(dataset.classes[:4])} ..., the checkpoint "
                           f"{', '.join((ck.classes or [])[:4])} ...: evaluate it on data with its classes")
    chosen = {"train": dataset.train, "val": dataset.val, "test": dataset.test}[split]
    if chosen is None:
        raise ResnetsError(f"{source} has no {split} split: choose --split val")
    return evaluate_masks(model.to(device), chosen, dataset.classes, *checkpoint_stats(ck), split,
                          batch_size=batch_size, device=device)


def overlay(image: np.ndarray, classes: np.ndarray, palette: list[int], alpha: float = 0.5) -> np.ndarray:
    """The image ``(H, W, 3)`` with each pixel's class colour blended in (the background, class 0, left as is)."""
    colours = np.array(palette, dtype=np.float32).reshape(-1, 3)[classes]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.where((classes == 0)[..., None], image, blended.round()).astype(np.uint8)


def write_prediction(image: torch.Tensor, logits: torch.Tensor, out: Path, stem: str, classes: list[str]
                     ) -> dict[str, Any]:
    """``<stem>_mask.png`` (a palette PNG: its values are the class indices, its colours VOC's) and
    ``<stem>_overlay.png`` in ``out``; returns each class's share of the pixels."""
    pred = logits.argmax(0).to(torch.uint8).numpy()
    palette = voc_palette()
    atomic_write(out / f"{stem}_mask.png", lambda f: f.write(encode_png(pred, palette)))
    blend = overlay(image.permute(1, 2, 0).numpy(), pred, palette)
    atomic_write(out / f"{stem}_overlay.png", lambda f: f.write(encode_png(blend)))
    counts = np.bincount(pred.ravel(), minlength=len(classes))
    return {classes[i]: round(float(c) / pred.size, 4) for i, c in enumerate(counts) if c}
