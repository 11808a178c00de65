"""The in-memory form of every dataset: uint8 image tensors with integer labels, split three ways."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

    from .stream import StreamSet


@dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64, with the file each came from when known."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        files = [self.files[i] for i in index.tolist()] if self.files is not None else None
        return ImageSet(self.images[index], self.labels[index], files)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


class Subsettable(Protocol):
    """What both kinds of split (``ImageSet``, ``stream.StreamSet``) offer for choosing images by class."""

    @property
    def labels(self) -> torch.Tensor: ...

    def subset(self, index: torch.Tensor) -> Self: ...

    def __len__(self) -> int: ...


Split = TypeVar("Split", bound=Subsettable)  # a function gives back the kind of split it was given


@dataclass
class ImageData:
    """A dataset ready for training: train, validation (carved from the training data) and test splits.

    ``mean``/``std`` are the training split's own per-channel statistics in [0, 1];
    ``splits`` says where each split came from, for reports; ``skipped`` lists unreadable files.
    """

    name: str
    classes: list[str]
    train: ImageSet | StreamSet  # a ``StreamSet`` is read from disk as it is used (``streamed``)
    val: ImageSet | StreamSet
    test: ImageSet | StreamSet | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.train.channels

    @property
    def image_size(self) -> int:
        return self.train.image_size

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train, ImageSet)


def channel_stats(images: torch.Tensor, chunk_bytes: int = 2**26) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (over all pixels) of uint8 images, scaled to [0, 1]; converted
    to float64 ``chunk_bytes`` (64 MB) at a time."""
    c = images.shape[1]
    chunk = max(1, chunk_bytes // (8 * max(1, images[0].numel()))) if len(images) else 1
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = images.numel() / c
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def holdout_size(n: int, val_size: float) -> int:
    """How many of ``n`` training images a validation split of ``val_size`` (a fraction, or a count) holds."""
    size = int(val_size) if val_size >= 1 else round(n * val_size)
    if not 0 < size < n:
        raise ValueError(f"validation size {val_size:g} leaves no training or no validation images out of {n}")
    return size


def split_indices(labels: torch.Tensor, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(rest, held_out)`` that hold out ``size`` of the labelled items, stratified by class, with a
    fixed seed. The split depends only on ``seed`` (not on the training seed), so every run validates on the
    same images."""
    n = len(labels)
    if not 0 < size < n:
        raise ValueError(f"cannot hold out {size} of {n} images")
    by_rank = _stratified_order(labels, seed)
    return by_rank[size:].sort().values, by_rank[:size].sort().values


def _stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A random order of the items (fixed by ``seed``) in which every stretch holds the classes in proportion."""
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    labels = labels[order]
    # Take from each class in proportion: rank every image within its class, then sort by relative rank.
    counts = torch.bincount(labels)
    rank = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros_like(counts)
    for i, y in enumerate(labels.tolist()):
        rank[i] = (seen[y].item() + 0.5) / counts[y].item()
        seen[y] += 1
    return order[torch.argsort(rank, stable=True)]


def fold_indices(labels: torch.Tensor, folds: int, fold: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(rest, held_out)`` for K-fold cross-validation: the items split into ``folds`` class-balanced
    parts of (nearly) equal size, with a fixed seed, and part ``fold`` (0-based) held out. Over the ``folds``
    values of ``fold`` every item is held out exactly once."""
    n = len(labels)
    if not 2 <= folds <= n or not 0 <= fold < folds:
        raise ValueError(f"cannot hold out fold {fold} of {folds} of {n} images (need 2 <= K <= images, 0 <= k < K)")
    by_rank = _stratified_order(labels, seed)
    held = torch.zeros(n, dtype=torch.bool)
    held[by_rank[fold * n // folds:(fold + 1) * n // folds]] = True  # a stretch of the stratified order: balanced
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def split_off(data: Split, size: int, seed: int = 0) -> tuple[Split, Split]:
    """Hold out ``size`` images, stratified by class, with a fixed seed: returns ``(rest, held_out)``."""
    rest, held = split_indices(data.labels, size, seed)
    return data.subset(rest), data.subset(held)


def take(data: Split, size: int | None, seed: int = 0) -> Split:
    """A class-balanced sample of ``size`` images (fixed by ``seed``), or all of them when ``size`` is None
    or not smaller than the set. Image trees are stored class by class, so "the first N" would be one class."""
    if size is None or size >= len(data):
        return data
    return split_off(data, size, seed)[1]
