"""Data sets read as they are used, one sample at a time, decoded and augmented in worker processes: memory
does not grow with the data set. Two sources: the image files of an ImageFolder tree (``FileList``), and
WebDataset shards on disk or at a URL (``ShardList``).

Which samples a process sees, and in what order, depends only on ``(seed, epoch)``, the number of processes
and, for shards, the number of workers; never on timing. So ``batches(epoch, start=k)`` yields exactly the
batches ``k, k+1, ...`` of an uninterrupted epoch (exact mid-epoch resume).

Training (``shuffle``): each epoch, files are permuted, or shards are permuted and their samples taken as one
sequence. Each of the ``world`` processes takes an equal part (files: every ``world``-th of the permutation;
shards: a contiguous ``1/world`` of the sequence, so a process reads only its own shards, at most two of
them partly), then whole batches only: like torchvision's ``DistributedSampler(drop_last=True)``, at most
``world`` samples plus one batch per process are left out of an epoch, a different few each epoch. Files:
worker ``w`` decodes the batches ``b`` with ``b % workers == w``. Shards: the process's part is cut into one
contiguous run per worker, each mixed by a seeded shuffle buffer. Evaluation reads every sample once, in order.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError
from .folder import unreadable
from .loader import epoch_images
from .shards import Shard, read_shard
from .transforms import SampleTransform

log = logging.getLogger("resnets")

T = TypeVar("T")
SHUFFLE_BUFFER = 1000  # samples per worker mixed across the shards it reads


@dataclass
class FileList:
    """Image files with their class indices (random access)."""

    files: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index: Sequence[int]) -> "FileList":
        return FileList([self.files[i] for i in index], [self.labels[i] for i in index])


@dataclass
class ShardList:
    """The shards of one split (sequential access), and how many classes their index lists (None: unchecked)."""

    shards: list[Shard]
    classes: int | None = None

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)


@dataclass
class StreamSet:
    """One split read lazily: its source, the stored image size (shorter side resized, centre crop), the
    evaluation crop and the channels."""

    source: FileList | ShardList
    image_size: int
    crop: int | None = None
    channels: int = 3

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self._file_list().labels, dtype=torch.long)

    def subset(self, index: torch.Tensor) -> "StreamSet":
        return replace(self, source=self._file_list().subset(index.tolist()))

    def _file_list(self) -> FileList:
        if not isinstance(self.source, FileList):
            raise DataError("choosing images by class needs an image folder or in-memory data, not shards")
        return self.source

    def eval_transform(self) -> SampleTransform:
        return SampleTransform(self.image_size, self.crop)


def default_workers(processes: int = 1) -> int:
    """The cores this process may use, less one for training, shared among the processes of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, cores // max(1, processes) - 1)


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(n)


def file_batches(n: int, batch: int, *, epoch: int, seed: int, rank: int, world: int, shuffle: bool,
                 drop_last: bool, repeats: int = 1) -> list[np.ndarray]:
    """The entries of each of this process's batches of a ``FileList`` of ``n`` files: ``file * repeats + copy``.
    With ``repeats > 1`` (repeated augmentation) each file of the epoch's order comes ``repeats`` times in a row,
    the epoch keeps ``epoch_images`` of them, and the processes take every ``world``-th: the copies of an image
    go to different processes, each augmenting its own."""
    order = permutation(n, seed, epoch) if shuffle else np.arange(n)
    if repeats > 1:
        order = (np.repeat(order, repeats) * repeats + np.tile(np.arange(repeats), n))[:epoch_images(n, repeats)]
        n = len(order)
    if shuffle:
        order = order[: n - n % world]
    order = order[rank::world]
    stop = len(order) - len(order) % batch if drop_last else len(order)
    return [order[i:i + batch] for i in range(0, stop, batch)]


def segments(counts: Sequence[int], order: Sequence[int] | np.ndarray, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``(shard, skip, take)`` runs covering samples ``lo`` to ``hi`` of the shards in ``order`` read end to end."""
    out, pos = [], 0
    for s in order:
        a, b = max(lo, pos), min(hi, pos + counts[s])
        if a < b:
            out.append((int(s), a - pos, b - a))
        pos += counts[s]
    return out


@dataclass(frozen=True)
class ShardPlan:
    """One worker's part of an epoch of shards: its runs of samples and its batches' numbers in the process's
    sequence (``None``: evaluation, in arrival order)."""

    runs: list[tuple[int, int, int]]
    batch_numbers: list[int] | None


def shard_plan(counts: Sequence[int], batch: int, *, epoch: int, seed: int, rank: int, world: int, worker: int,
               workers: int, shuffle: bool) -> ShardPlan:
    n = sum(counts)
    if not shuffle:  # evaluation: contiguous parts, every sample once
        lo, hi = rank * n // world, (rank + 1) * n // world
        w_lo, w_hi = lo + worker * (hi - lo) // workers, lo + (worker + 1) * (hi - lo) // workers
        return ShardPlan(segments(counts, range(len(counts)), w_lo, w_hi), None)
    order = permutation(len(counts), seed, epoch)
    steps = (n // world) // batch
    numbers = list(range(worker, steps, workers))
    first = rank * (n // world) + sum(len(range(w, steps, workers)) for w in range(worker)) * batch
    return ShardPlan(segments(counts, order, first, first + len(numbers) * batch), numbers)


def shuffled(stream: Iterator[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """A seeded shuffle buffer: items mixed within a window of ``size``."""
    buf: list[T] = []
    for item in stream:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(rng.integers(size))
        yield buf[i]
        buf[i] = item
    for i in rng.permutation(len(buf)):
        yield buf[i]


def sample_id(key: str) -> int:
    """A stable 63-bit number for a sample key (seeds its augmentation)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


@dataclass
class Batch:
    """What a worker sends: the batch's number, uint8 images, labels, sample keys and the keys it skipped."""

    number: int
    images: torch.Tensor
    labels: torch.Tensor
    keys: list[str]
    skipped: list[str]

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory (the DataLoader calls this with ``pin_memory``), for fast copies to a GPU."""
        return replace(self, images=self.images.pin_memory(), labels=self.labels.pin_memory())


class _Worker(IterableDataset):
    """The per-worker half of a ``StreamLoader``: reads, decodes and batches its own samples. The epoch and
    start step live in shared memory so that persistent workers see each new epoch. Any error is sent as a
    message, so that the main process can report it in one line."""

    def __init__(self, data: StreamSet, transform: SampleTransform, batch: int, *, seed: int, rank: int,
                 world: int, shuffle: bool, drop_last: bool, strict: bool, repeats: int = 1) -> None:
        self.data, self.transform, self.batch, self.repeats = data, transform, batch, repeats
        self.seed, self.rank, self.world = seed, rank, world
        self.shuffle, self.drop_last, self.strict = shuffle, drop_last, strict
        self.state = multiprocessing.Array("q", 2, lock=False)  # epoch, start

    def __iter__(self) -> Iterator[Batch | str]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, start = self.state[0], self.state[1]
        try:
            source = self.data.source
            if isinstance(source, FileList):
                yield from self._files(source, epoch, start, worker, workers)
            else:
                yield from self._shards(source, epoch, start, worker, workers)
        except Exception as e:  # sent to the main process, which raises it as one line
            yield str(e) if isinstance(e, DataError) else f"data loading failed: {type(e).__name__}: {e}"

    def _decode(self, samples: Sequence[tuple[str, bytes | str, int]], epoch: int, number: int) -> Batch:
        images, labels, keys, skipped = [], [], [], []
        for key, data, label in samples:
            try:
                raw = data if isinstance(data, bytes) else Path(data).read_bytes()
                images.append(self.transform(raw, epoch, sample_id(key)))
                labels.append(label)
                keys.append(key)
            except Exception as e:  # PIL raises many kinds
                if self.strict:
                    raise DataError(f"unreadable image {key}: {unreadable(e)}") from None
                skipped.append(f"{key}: {unreadable(e)}")
        size, c = self.transform.out_size, self.data.channels
        stack = np.stack(images) if images else np.zeros((0, c, size, size), np.uint8)
        return Batch(number, torch.from_numpy(stack), torch.tensor(labels, dtype=torch.long), keys, skipped)

    def _files(self, files: FileList, epoch: int, start: int, worker: int, workers: int) -> Iterator[Batch]:
        batches = file_batches(len(files), self.batch, epoch=epoch, seed=self.seed, rank=self.rank,
                               world=self.world, shuffle=self.shuffle, drop_last=self.drop_last, repeats=self.repeats)
        for b in range(start + worker, len(batches), workers):
            entries = [divmod(int(v), self.repeats) for v in batches[b]]
            # each copy of an image is its own sample: its key (which seeds its augmentation) names the copy
            yield self._decode([(files.files[i] + (f"#{c}" if c else ""), files.files[i], files.labels[i])
                                for i, c in entries], epoch, b)

    def _shards(self, source: ShardList, epoch: int, start: int, worker: int, workers: int) -> Iterator[Batch]:
        shards = source.shards
        plan = shard_plan([s.count for s in shards], self.batch, epoch=epoch, seed=self.seed, rank=self.rank,
                          world=self.world, worker=worker, workers=workers, shuffle=self.shuffle)
        classes = source.classes
        stream: Iterator[tuple[str, bytes, int]] = (
            sample for s, skip, take in plan.runs for sample in read_shard(shards[s], skip, take, classes))
        if plan.batch_numbers is None:
            chunk: list[tuple[str, bytes, int]] = []
            for sample in stream:
                chunk.append(sample)
                if len(chunk) == self.batch:
                    yield self._decode(chunk, epoch, -1)
                    chunk = []
            if chunk:
                yield self._decode(chunk, epoch, -1)
            return
        stream = shuffled(stream, SHUFFLE_BUFFER, np.random.default_rng((self.seed, epoch, self.rank, worker)))
        for number in plan.batch_numbers:
            chunk = [sample for _, sample in zip(range(self.batch), stream)]
            if len(chunk) < self.batch:
                raise DataError(f"the shards ended early (batch {number}): a shard holds fewer samples than "
                                "its index says; re-create the shards")
            if number >= start:
                yield self._decode(chunk, epoch, number)


class StreamLoader:
    """Batches of a ``StreamSet`` for this process: ``batches(epoch, start)`` yields ``(uint8 images, labels)``
    on ``device``, in a fixed order for training, in arrival order for evaluation (``shuffle=False``).

    ``batch_size`` is this process's batch. With ``workers > 0`` a ``torch.utils.data.DataLoader`` runs that
    many persistent worker processes (``prefetch`` batches each ahead); unreadable images are skipped and
    counted in ``skipped`` (an error with ``strict``).
    """

    per_process = True  # the batches are this process's own (an in-memory BatchLoader gives global batches)

    def __init__(self, data: StreamSet, transform: SampleTransform, batch_size: int, *, shuffle: bool,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world: int = 1, workers: int = 0,
                 device: torch.device | str = "cpu", strict: bool = False, prefetch: int = 2, repeats: int = 1
                 ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if repeats > 1 and not (shuffle and isinstance(data.source, FileList)):
            raise DataError("repeated augmentation needs an image folder (shuffled); for shards leave out "
                            "--aug-repeats, or load the images in memory")
        self.data, self.batch_size, self.shuffle, self.device = data, batch_size, shuffle, torch.device(device)
        self.rank, self.world = rank, world
        self._worker = _Worker(data, transform, batch_size, seed=seed, rank=rank, world=world, shuffle=shuffle,
                               drop_last=drop_last, strict=strict, repeats=repeats)
        self._loader = DataLoader(self._worker, batch_size=None, num_workers=workers,
                                  persistent_workers=workers > 0 and shuffle,
                                  prefetch_factor=prefetch if workers else None,
                                  pin_memory=self.device.type == "cuda")
        self.skipped: list[str] = []
        n = epoch_images(len(data), repeats)
        if shuffle:
            per = n // world
            self._len = per // batch_size if drop_last else -(-per // batch_size)
        else:
            self._len = -(-n // (world * batch_size))  # about: shards split by samples, files every world-th
        if shuffle and self._len == 0:
            raise DataError(f"{n} training images are fewer than one batch of {batch_size} per process")

    def __len__(self) -> int:
        return self._len

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.raw_batches(epoch, start):
            yield batch.images.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True)

    def raw_batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The ``Batch`` objects (with their sample keys), as tensors."""
        self._worker.state[0], self._worker.state[1] = epoch, start
        pending: dict[int, Batch] = {}
        expected = start
        try:
            for item in self._loader:
                if isinstance(item, str):
                    raise DataError(item)
                self._count_skipped(item.skipped)
                if not self.shuffle:
                    yield item
                    continue
                pending[item.number] = item
                while expected in pending:
                    yield pending.pop(expected)
                    expected += 1
        except RuntimeError as e:  # a worker process died (killed, out of memory)
            if "DataLoader worker" not in str(e):
                raise
            raise DataError(f"a data-loading worker process died ({str(e).splitlines()[0]}); "
                            "run with --workers 0 to see the error in the main process") from None
        if self.shuffle and (pending or expected != len(self)):
            raise DataError(f"the data ended after {expected} of {len(self)} batches (a shard shorter than "
                            "its index says?)")

    def _count_skipped(self, skipped: list[str]) -> None:
        for text in skipped:
            log.warning("skipped %s", text)
        self.skipped += skipped

    def close(self) -> None:
        """Stop the worker processes now (they also stop with the loader, and with this process)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader._iterator = None
