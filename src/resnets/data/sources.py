"""Streamed data sets: an ImageFolder tree on disk or WebDataset shards as ``ImageData`` whose splits are
``StreamSet``s, read as training uses them. ``stream_wanted`` decides when a folder is too big for memory."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .folder import decode_image, list_image_folder
from .shards import ShardIndex, check_local_shards, read_index, read_shard
from .stream import FileList, ShardList, StreamLoader, StreamSet
from .transforms import SampleTransform
from .types import ImageData, ImageSet, channel_stats, holdout_size, split_indices

log = logging.getLogger("resnets")

MEMORY_SHARE = 0.25  # decoded sets up to this share of the machine's memory (per process) are held in memory
STATS_SAMPLE = 1000  # training images whose statistics stand for the split's


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def stream_wanted(folder: Path, image_size: int | None) -> bool:
    """True when the decoded images of ``folder`` would take more than a quarter of this machine's memory
    divided among its training processes."""
    splits, _ = list_image_folder(folder)
    files = [f for paths, _ in splits.values() for f in paths]
    size = image_size or _first_size(files)
    need = len(files) * 3 * size * size
    budget = MEMORY_SHARE * memory_bytes() / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if need > budget:
        log.info("%d images at %dx%d would take %.1f GB in memory (more than %.1f GB): streaming them from disk "
                 "(--in-memory to hold them anyway)", len(files), size, size, need / 1e9, budget / 1e9)
    return need > budget


def _first_size(files: list[str]) -> int:
    for f in files[:20]:
        try:
            return decode_image(Path(f).read_bytes(), None).shape[-1]
        except Exception:  # noqa: S112 - an unreadable file: try the next
            continue
    raise DataError(f"none of the first images of {Path(files[0]).parent.parent} can be read")


def _size(image_size: int | None, crop: int | None, first: Callable[[], int]) -> int:
    """The stored image size: given, or the crop / 0.875 (256 for a 224 crop), or the first image's."""
    if image_size:
        return image_size
    if crop:
        return round(crop / 0.875)
    return first()


def _stats(train: StreamSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel statistics of up to ``STATS_SAMPLE`` training images spread over the split (seed 0), at 32 px."""
    index = np.random.default_rng(0).permutation(len(train))[:STATS_SAMPLE]
    sample = train.subset(torch.from_numpy(np.sort(index))) if isinstance(train.source, FileList) else train
    return channel_stats(images_of(replace(sample, image_size=32, crop=None), STATS_SAMPLE))


def streamed_folder(path: Path, image_size: int | None, crop: int | None, val_size: float | None) -> ImageData:
    """An image tree on disk, read file by file; splits as the in-memory path makes them."""
    splits, classes = list_image_folder(path)
    train_files, train_labels = splits["train"] if "train" in splits else splits[None]  # one or the other
    size = _size(image_size, crop, lambda: _first_size(train_files))
    make = lambda f, y: StreamSet(FileList(f, y), size, crop)  # noqa: E731
    train = make(train_files, train_labels)
    names = {"train": f"{path.name}: train/ (streamed)"}
    if "val" in splits and val_size is None:
        val, names["val"] = make(*splits["val"]), f"{path.name}: val/"
    elif val_size == 0:
        val, names["val"] = train.subset(torch.zeros(0, dtype=torch.long)), "none"
    else:
        try:
            held = holdout_size(len(train), 0.1 if val_size is None else val_size)
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
        rest, held_out = split_indices(train.labels, held, seed=0)
        train, val = train.subset(rest), train.subset(held_out)
        names["val"] = f"{held} held out of train (seed 0)"
    test = make(*splits["test"]) if "test" in splits else None
    names["test"] = f"{path.name}: test/" if test else "none"
    return finish_data(path.name, classes, train, val, test, names, _stats(train))


def streamed_shards(source: str, image_size: int | None, crop: int | None,
                    val_size: float | None = None) -> tuple[ImageData, ShardIndex]:
    """Shards on disk or at a URL, with the splits their index lists (``val_size=0``: no validation split)."""
    if val_size not in (None, 0):
        raise DataError("the validation split of shards was fixed when they were written (resnets shard --val-size); "
                        "--val-size takes only 0 (no validation split) here")
    index = read_index(source)
    if val_size == 0:
        index.splits.pop("val", None)
    check_local_shards(index)
    first = lambda: decode_image(next(read_shard(index.splits["train"][0], 0, 1))[1], None).shape[-1]  # noqa: E731
    size = _size(image_size or index.image_size, crop, first)
    sets = {split: StreamSet(ShardList(shards, len(index.classes)), size, crop)
            for split, shards in index.splits.items()}
    train = sets["train"]
    val = sets.get("val", StreamSet(ShardList([]), size, crop))
    stats = (index.mean, index.std) if index.mean and index.std else _stats(train)
    name = str(source).rstrip("/").removesuffix("/dataset.json").rsplit("/", 1)[-1]
    names: dict[str, str] = {split: f"{name}: {split} shards" for split in ("train", "val", "test") if split in sets}
    names.setdefault("val", "none")
    return finish_data(name, index.classes, train, val, sets.get("test"), names, stats), index


def finish_data(name: str, classes: list[str], train: ImageSet | StreamSet, val: ImageSet | StreamSet,
                test: ImageSet | StreamSet | None, splits: dict[str, str],
                stats: tuple[tuple[float, ...], tuple[float, ...]], skipped: list[str] | None = None) -> ImageData:
    """``ImageData`` whose split descriptions end with their image counts; ``stats``: the channels' mean and
    standard deviation."""
    sizes = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    splits = {k: f"{v} ({sizes[k]} images)" for k, v in splits.items()}
    mean, std = stats
    return ImageData(name, classes, train, val, test, mean, std, splits, list(skipped or []))


def held_in_memory(data: ImageData) -> ImageData:
    """Every split of a streamed data set decoded into memory (``--in-memory`` on shards)."""
    def load(split: ImageSet | StreamSet) -> ImageSet:
        if isinstance(split, ImageSet):
            return split
        loader = StreamLoader(split, SampleTransform(split.image_size), 256, shuffle=False)
        batches = list(loader.raw_batches())
        data.skipped += loader.skipped
        size = split.image_size
        images = [b.images for b in batches] or [torch.zeros(0, split.channels, size, size, dtype=torch.uint8)]
        return ImageSet(torch.cat(images), torch.cat([b.labels for b in batches] or [torch.zeros(0).long()]),
                        [k for b in batches for k in b.keys])

    train = load(data.train)
    mean, std = channel_stats(train.images)
    test = load(data.test) if data.test is not None else None
    return ImageData(data.name, data.classes, train, load(data.val), test, mean, std,
                     {k: v.replace(" (streamed)", "") for k, v in data.splits.items()}, data.skipped)


def labelled_images(split: ImageSet | StreamSet, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a split (uint8, as evaluation sees them; streamed ones decoded now) and their
    labels."""
    if isinstance(split, ImageSet):
        return split.images[:n], split.labels[:n]
    loader = StreamLoader(split, split.eval_transform(), max(1, min(n, 256)), shuffle=False)
    images, labels, have = [], [], 0
    for x, y in loader.batches():
        images.append(x)
        labels.append(y)
        have += len(x)
        if have >= n:
            break
    loader.close()
    return torch.cat(images)[:n], torch.cat(labels)[:n]


def images_of(split: ImageSet | StreamSet, n: int) -> torch.Tensor:
    """The first ``n`` images of a split as uint8, as evaluation sees them."""
    return labelled_images(split, n)[0]


def class_mapping(found: list[str], classes: list[str], wnids: list[str] | None = None) -> list[int] | None:
    """Each of the data's classes ``found`` as an index into a model's ``classes`` (matched by name, or by
    WordNet id for ImageNet weights: folders named ``n01440764``); None where one has no match."""
    index = {c: i for i, c in enumerate(classes)}
    index.update({w: i for i, w in enumerate(wnids or [])})
    return [index[c] for c in found] if all(c in index for c in found) else None


def relabel(data: ImageData, mapping: list[int], classes: list[str]) -> None:
    """Give ``data`` the class list ``classes``: label ``k`` becomes ``mapping[k]`` in every split."""
    table = torch.tensor(mapping)
    splits = {id(s): s for s in (data.train, data.val, data.test)}  # a split may stand for two
    for split in splits.values():
        if isinstance(split, ImageSet):
            split.labels = table[split.labels]
        elif split is not None and isinstance(split.source, FileList):
            split.source.labels = table[torch.tensor(split.source.labels, dtype=torch.long)].tolist()
        elif split is not None and len(split):
            raise DataError("shards hold class indices of their own classes: make them with the model's classes")
    data.classes = list(classes)
