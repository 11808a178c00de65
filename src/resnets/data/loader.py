"""Batches from an in-memory ``ImageSet``. The order of epoch ``e`` depends only on ``(seed, e)``, so a run
resumed at any step sees exactly the batches that an uninterrupted run would have seen."""
from __future__ import annotations

from typing import Iterator

import torch

from .types import ImageSet


def epoch_images(n: int, repeats: int) -> int:
    """How many samples an epoch of ``n`` images takes: ``n``, or with repeated augmentation whole multiples of 256
    (as timm's ``RepeatAugSampler``), streamed or in memory."""
    return n // 256 * 256 if repeats > 1 and n >= 256 else n


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The random generator for the augmentation of one training batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)


class BatchLoader:
    """Slices of a dataset held in (device) memory, shuffled per epoch or in order.

    With ``world_size > 1`` each rank takes every ``world_size``-th batch element of the same order
    (a distributed sampler without a separate object). With ``alternate_flips`` a random half of the
    images (fixed by the seed) comes mirrored in even epochs and the other half in odd ones, so that
    every two epochs show each image both ways (airbench's alternating flips; random flips leave a
    quarter of the images unmirrored, or always mirrored, over two epochs).

    With ``repeats > 1`` (repeated augmentation, Hoffer et al. 2020; timm's ``RepeatAugSampler``) each epoch
    takes ``repeats`` consecutive copies of each image of its order, so that a batch holds differently augmented
    copies of the same images, and an epoch keeps the length of one pass (a multiple of 256 images, as timm's):
    it sees a ``1 / repeats`` share of the images, each ``repeats`` times.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool, drop_last: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 alternate_flips: bool = False, repeats: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if repeats < 1 or (repeats > 1 and not shuffle):
            raise ValueError(f"repeats must be >= 1 (and only for a shuffled order), got {repeats}")
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.flipped_first = None
        if alternate_flips:
            g = torch.Generator().manual_seed(seed * 1_000_003 - 1)  # a stream apart from the epochs' orders
            first = torch.rand(len(self.labels), generator=g) < 0.5
            self.flipped_first = first.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.repeats = repeats

    def _epoch_images(self) -> int:
        return epoch_images(len(self.labels), self.repeats)

    def _order(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[:self._epoch_images()]
        return order

    def __len__(self) -> int:
        total = self._epoch_images()
        n = total // self.world_size if self.shuffle else -(-total // self.world_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from step ``start`` on, as ``(uint8 images, labels)``."""
        order = self._order(epoch)
        if self.world_size > 1:
            usable = len(order) - len(order) % self.world_size if self.shuffle else len(order)
            order = order[:usable][self.rank::self.world_size]
        order = order.to(self.images.device)
        for step in range(start, len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.images[idx]
            if self.flipped_first is not None:
                flip = self.flipped_first[idx] != bool(epoch % 2)
                images = torch.where(flip[:, None, None, None], images.flip(3), images)
            yield images, self.labels[idx]
