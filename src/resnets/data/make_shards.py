"""``resnets shard SRC DEST``: an ImageFolder tree (a folder, or a tar of one) as WebDataset shards.

Each split becomes ``DEST/<split>-000000.tar ...`` of about ``shard_size`` bytes, its samples shuffled across the
shards with a fixed seed (so any shard holds every class). A tree without val/ gets the same validation
split the in-memory path would hold out of train/ (10%, class-balanced, seed 0). Every image is decoded once
to check it (unreadable ones are skipped and listed, or an error with ``strict``) and to measure the training
split's channel statistics; with ``resize_short`` it is re-encoded as a JPEG with its shorter side at most that
many pixels. ``DEST/dataset.json`` is written last, so a folder with one holds complete shards.
"""
from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError, archive_problem
from ..files import disk_full
from .folder import MAX_PIXELS, _eight_bit, is_archive, list_image_folder, unreadable
from .shards import ShardWriter, write_index
from .types import holdout_size, split_indices

log = logging.getLogger("resnets")
Listing = tuple[list[str], list[int]]  # a split's image files and their class indices

EXTS = {".jpeg": "jpg", ".jpg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp", ".ppm": "ppm",
        ".pgm": "pgm", ".tif": "tiff", ".tiff": "tiff", ".gif": "gif"}


def parse_size(text: str) -> int:
    """``"256MB"``, ``"1.5G"``, ``"500k"`` or a byte count, as bytes."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale != 1 else t) * scale
    except ValueError:
        raise DataError(f"shard size {text!r} is not a size (e.g. 256MB, 1GB, 500000)") from None
    if value < 1e4:
        raise DataError(f"shard size {text!r} is below 10 kB")
    return int(value)


def _thumbnail_and_image(data: bytes, resize_short: int | None) -> tuple[np.ndarray, Image.Image | None]:
    """A small RGB decode of the image (checks it and gives its statistics) and, with ``resize_short``, the
    image with its shorter side at most that many pixels."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"image too large ({img.width}x{img.height})")
        if resize_short is None and img.format == "JPEG":
            img.draft("RGB", (32, 32))  # checks every byte of the file all the same
        img = _eight_bit(ImageOps.exif_transpose(img)).convert("RGB")
        if resize_short is not None and min(img.size) > resize_short:
            s = resize_short / min(img.size)
            img = img.resize((max(resize_short, round(img.width * s)), max(resize_short, round(img.height * s))),
                             Image.Resampling.BILINEAR)
        thumb = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
        return thumb, (img if resize_short is not None else None)


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _key(path: str, root: Path) -> str:
    """A sample key from its path: class folder and file name, without dots (WebDataset splits at the first)."""
    rel = Path(path).relative_to(root).with_suffix("").parts
    return "/".join(rel[-2:]).replace(".", "_")


def _write_split(writer: ShardWriter, tree: Path, files: list, labels: list, seed: int, resize_short: int | None,
                 quality: int, strict: bool, skipped: list[str], progress: Callable[[int], None] | None) -> np.ndarray:
    """Write one split's images in a shuffled order; returns the sums of their thumbnails' channel means and
    squares (for the training statistics)."""
    sums = np.zeros(6)
    for i in np.random.default_rng(seed).permutation(len(files)):
        path = files[i]
        try:
            data = Path(path).read_bytes()
            thumb, image = _thumbnail_and_image(data, resize_short)
        except Exception as e:  # PIL raises many kinds
            rel = Path(path).relative_to(tree)
            if strict:
                raise DataError(f"unreadable image {rel}: {unreadable(e)}") from None
            log.warning("skipped %s: %s", rel, unreadable(e))
            skipped.append(str(rel))
            continue
        sums += np.concatenate([thumb.mean((0, 1)), np.square(thumb).mean((0, 1))])
        ext = "jpg" if image is not None else EXTS.get(Path(path).suffix.lower(), "jpg")
        writer.write(_key(path, tree), _encode_jpeg(image, quality) if image is not None else data, ext, labels[i])
        if progress is not None:
            progress(1)
    return sums


def make_shards(src: str | Path, dest: str | Path, *, shard_size: int = 256_000_000, resize_short: int | None = None,
                quality: int = 90, val_size: float = 0.1, seed: int = 0, strict: bool = False,
                progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write ``src`` as shards into ``dest``; returns the sample count of each split."""
    src, dest = Path(src), Path(dest)
    if not 1 <= quality <= 100:
        raise DataError(f"JPEG quality must be in 1..100, got {quality}")
    if resize_short is not None and resize_short < 8:
        raise DataError(f"--resize-short must be at least 8 pixels, got {resize_short}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} exists and is not an empty folder: choose a new one")
    if not src.exists():
        raise DataError(f"data not found: {src}")
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest.parent if dest.parent.exists() else None) as tmp:
        tree = _extracted(src, Path(tmp)) if is_archive(src) else src
        listing, classes = list_image_folder(tree)
        splits = _with_val(listing, val_size)
        dest.mkdir(parents=True, exist_ok=True)
        shards: dict[str, list[dict[str, Any]]] = {}
        counts: dict[str, int] = {}
        skipped: list[str] = []
        stats: tuple[np.ndarray, np.ndarray] | None = None  # the training images' channel mean and std
        for split, (files, labels) in splits.items():
            writer = ShardWriter(dest, split, shard_size)
            try:
                sums = _write_split(writer, tree, files, labels, seed, resize_short, quality, strict, skipped,
                                    progress)
                shards[split] = writer.close()
            except BaseException as e:
                writer.abort()
                full = disk_full(e, dest, f"the whole shards written so far are in {dest}, without an index")
                if full is not None:
                    raise full from None
                raise
            counts[split] = sum(s["count"] for s in shards[split])
            if split == "train" and counts[split]:
                mean = sums[:3] / counts[split]
                stats = mean, np.sqrt(np.maximum(sums[3:] / counts[split] - mean ** 2, 1e-12))
    if not counts.get("train") or stats is None:
        raise DataError(f"no readable training images in {src}")
    write_index(dest, classes, shards, mean=[round(float(v), 4) for v in stats[0]],
                std=[round(float(v), 4) for v in stats[1]], image_size=resize_short, skipped=skipped)
    return counts


def _extracted(archive: Path, into: Path) -> Path:
    """An archive of an image tree unpacked into ``into`` (members that would leave it, and links, refused)."""
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot unpack {archive}: {archive_problem(e)}") from None
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() and not _is_class_or_split(entries[0]) else into


def _is_class_or_split(path: Path) -> bool:
    return path.name in ("train", "val", "test") or any(p.is_file() for p in path.iterdir())


def _with_val(listing: dict[str | None, Listing], val_size: float) -> dict[str, Listing]:
    """train/val/test of a listing: a tree without split folders is all train; without val/, the validation
    split is held out of train as the in-memory path does it."""
    splits = {"train": listing[None]} if None in listing else {k: v for k, v in listing.items() if k is not None}
    if "val" in splits or val_size == 0:
        return splits
    files, labels = splits["train"]
    try:
        held = holdout_size(len(files), val_size)
    except ValueError as e:
        raise DataError(str(e)) from None
    rest, val = split_indices(torch.tensor(labels), held, seed=0)

    def pick(index: torch.Tensor) -> Listing:
        return [files[i] for i in index.tolist()], [labels[i] for i in index.tolist()]

    return {**splits, "train": pick(rest), "val": pick(val)}
