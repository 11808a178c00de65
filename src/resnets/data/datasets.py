"""One entry point for every data source: ``load_data("digits" | "cifar10" | "cifar100" | PATH)``.

The validation split is always carved from the training data with a fixed seed (the paper's 45k/5k for
CIFAR), so the test split is never used to choose anything. Decoded image trees are cached as uint8
arrays, so a second run starts in seconds.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write, cache_dir
from .cifar import CIFAR, cifar_archive_kind, extract_cifar_archive, load_cifar
from .digits import load_digits_set
from .folder import FolderContents, is_archive, read_image_folder
from .shards import is_shard_dataset
from .sources import finish_data, held_in_memory, stream_wanted, streamed_folder, streamed_shards
from .types import ImageData, ImageSet, channel_stats, holdout_size, split_off

log = logging.getLogger("resnets")

DIGITS_TEST, DIGITS_VAL = 360, 180  # fixed split of the 1,797 digits: 1,257 train / 180 val / 360 test
CIFAR_VAL = 5000


def _fingerprint(source: Path, image_size: int | None) -> str:
    h = hashlib.sha1(f"{source.resolve()}|{image_size}|v1".encode())
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.lstat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = source.stat()
        h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _save_contents(path: Path, c: FolderContents) -> None:
    arrays: dict[str, Any] = {"classes": np.array(c.classes), "skipped": np.array(c.skipped, dtype=str)}
    for split, s in c.sets.items():
        key = split or "all"
        arrays[f"{key}.images"] = s.images.numpy()
        arrays[f"{key}.labels"] = s.labels.numpy()
        arrays[f"{key}.files"] = np.array(s.files)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_contents(path: Path) -> FolderContents:
    with np.load(path, allow_pickle=False) as z:
        splits = {k.split(".")[0] for k in z.files if k.endswith(".images")}
        sets = {
            (None if s == "all" else s): ImageSet(torch.from_numpy(z[f"{s}.images"]),
                                                  torch.from_numpy(z[f"{s}.labels"]), z[f"{s}.files"].tolist())
            for s in splits
        }
        return FolderContents(sets, z["classes"].tolist(), z["skipped"].tolist())


def read_image_folder_cached(source: Path, image_size: int | None, strict: bool, cache: bool) -> FolderContents:
    """``read_image_folder`` with its result kept under ``RESNETS_CACHE`` (default ``~/.cache/resnets``)."""
    if not cache:
        return read_image_folder(source, image_size, strict)
    path = cache_dir() / f"{source.name}-{_fingerprint(source, image_size)}.npz"
    if path.is_file():
        try:
            contents = _load_contents(path)
            if strict and contents.skipped:
                raise DataError(f"unreadable image {source / contents.skipped[0]} (found when the cache was built)")
            return contents
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring damaged cache %s (%s)", path, e)
    contents = read_image_folder(source, image_size, strict)
    _save_contents(path, contents)
    return contents


def is_flat_tree(path: Path) -> bool:
    """A folder of class folders with no train/val/test split folders (e.g. ImageNet's val/ in class folders)."""
    from .folder import SPLITS

    if not path.is_dir() or is_shard_dataset(path) or any((path / s).is_dir() for s in SPLITS):
        return False
    return any(p.is_dir() for p in path.iterdir())


def load_data(
    source: str | Path = "digits",
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    val_size: float | None = None,
    strict: bool = False,
    cache: bool = True,
    stream: bool | None = None,
    crop_size: int | None = None,
) -> ImageData:
    """Load a dataset with train/validation/test splits and the training split's channel statistics.

    Args:
        source: ``"digits"`` (embedded), ``"cifar10"``/``"cifar100"`` (official python batches under
            ``root``), or a path to an ImageFolder tree, a ``.tar``/``.tar.gz`` of one, a CIFAR batches folder,
            or a CIFAR archive (``cifar-10-python.tar.gz`` or a ``.tar.xz`` in its layout: unpacked once into
            the cache).
        root: where the CIFAR batches are (default ``<cache>/data``).
        download: fetch the official CIFAR archive when it is missing.
        image_size: size of the stored square images (default: the images' own size).
        val_size: held-out part of the training data, a fraction or a count
            (default: 5,000 for CIFAR, 10% for image trees, a fixed 180 for the digits); 0: none (an empty
            validation split).
        strict: fail on the first unreadable image instead of skipping it.
        stream: read an image folder or shards from disk as training uses them (``StreamSet`` splits) instead
            of decoding them into memory; ``None``: shards and folders too big for a quarter of the memory
            are streamed. Streamed images are stored at ``image_size`` (default: ``crop_size / 0.875``).
        crop_size: the evaluation crop of streamed images.
    """
    name, path = str(source), Path(source)
    cifar_kind = next((k for k, v in CIFAR.items() if path.name == v[0]), None) if path.is_dir() else None
    if is_shard_dataset(name):
        data, _ = streamed_shards(name, image_size, crop_size, val_size)
        return held_in_memory(data) if stream is False else data
    if stream and (not path.is_dir() or cifar_kind):
        raise DataError(f"streaming reads an image folder or shards, not {source!r}" + (
            f" (make shards of it with: resnets shard {source} DEST)" if is_archive(path) else ""))
    if name == "digits":
        found = _digits()
    elif kind := name if name in CIFAR else cifar_kind:
        base = Path(root) if root is not None and name in CIFAR else (path if cifar_kind else cache_dir() / "data")
        found = _cifar(kind, base, download)
    elif archived := cifar_archive_kind(path):  # the official archive, or a copy in its layout
        found = _cifar(archived, extract_cifar_archive(archived, path, cache_dir() / "data"), False)
    elif path.exists() and (path.is_dir() or is_archive(path)):
        if stream or (stream is None and path.is_dir() and stream_wanted(path, image_size)):
            return streamed_folder(path, image_size, crop_size, val_size)
        found = _folder(path, image_size, strict, cache, val_size)
    else:
        raise DataError(f"data not found: {source!r} (expected 'digits', 'cifar10', 'cifar100', "
                        "an image folder, or a .tar/.tar.gz archive)")
    if len(found.train) < 2:
        raise DataError(f"{source}: not enough training images")
    return _with_validation(found, val_size)


@dataclass
class _Found:
    """A source's images before the validation split: its training set (all of it), test set, the validation
    split it brings (a val/ folder) or the default size of the one held out of train, and their descriptions."""

    name: str
    classes: list[str]
    train: ImageSet
    test: ImageSet | None
    splits: dict[str, str]
    val_default: float
    val: ImageSet | None = None
    skipped: list[str] = field(default_factory=list)


def _digits() -> _Found:
    everything, classes = load_digits_set()
    rest, test = split_off(everything, DIGITS_TEST, seed=0)
    return _Found("digits", classes, rest, test, {
        "train": "sklearn digits minus val/test", "val": f"{DIGITS_VAL} held out of train (seed 0)",
        "test": f"{DIGITS_TEST} held out (seed 0)"}, DIGITS_VAL)


def _cifar(kind: str, base: Path, download: bool) -> _Found:
    train, test, classes = load_cifar(kind, base, download)
    return _Found(kind, classes, train, test, {
        "train": "official train minus val", "val": f"{CIFAR_VAL} held out of official train (seed 0)",
        "test": "official test"}, CIFAR_VAL)


def _folder(path: Path, image_size: int | None, strict: bool, cache: bool, val_size: float | None) -> _Found:
    contents = read_image_folder_cached(path, image_size, strict, cache)
    test = contents.sets.get("test")
    train = contents.sets.get("train", contents.sets.get(None))
    if train is None:
        raise DataError(f"{path}: no training images")
    found = _Found(path.name.split(".")[0], contents.classes, train, test,
                   {"train": f"{path.name}: train/", "test": f"{path.name}: test/" if test else "none"}, 0.1,
                   skipped=contents.skipped)
    if "val" in contents.sets and val_size is None:  # the tree's own validation split
        found.val, found.splits["val"] = contents.sets["val"], f"{path.name}: val/"
    return found


def _with_validation(found: _Found, val_size: float | None) -> ImageData:
    """The data set with its validation split: the source's own, none (``val_size`` 0: train on everything,
    with fixed hyper-parameters), or held out of train with a fixed seed."""
    train, val, splits = found.train, found.val, found.splits
    if val is None and val_size == 0:
        val = train.subset(torch.zeros(0, dtype=torch.long))
        splits["train"] = splits["train"].replace(" minus val/test", " minus test").replace(" minus val", "")
        splits["val"] = "none"
    elif val is None:
        try:
            held = holdout_size(len(train), found.val_default if val_size is None else val_size)
        except ValueError as e:
            raise DataError(str(e)) from None
        train, val = split_off(train, held, seed=0)
        splits.setdefault("val", f"{held} held out of train (seed 0)")
    return finish_data(found.name, found.classes, train, val, found.test, splits, channel_stats(train.images),
                       found.skipped)
