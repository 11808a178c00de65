"""ImageFolder trees (``root/<split>/<class>/*.jpg``, or ``root/<class>/*.jpg``), as a folder or a tar archive.

Images are decoded once, made square at one size (shorter side resized, then centre-cropped) and kept as
uint8. Unreadable files are skipped with a warning that names them (or are an error with ``strict``);
symbolic links that leave the root, and links inside archives, are never followed.
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError, archive_problem
from .jpeg import decode_jpeg
from .types import ImageSet

log = logging.getLogger("resnets")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "val", "test")
MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs)
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by 90 degrees


def is_archive(path: Path) -> bool:
    return path.name.endswith((".tar", ".tar.gz", ".tgz"))


RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_image(data: bytes, size: int | None, channels: int = 3, interpolation: str = "bilinear",
                 keep_shape: bool = False) -> np.ndarray:
    """Decode one image file to uint8 ``(C, size, size)``: shorter side resized to ``size`` (``interpolation``:
    bilinear or bicubic), centre-cropped.

    ``size=None`` keeps a square image as it is (and centre-crops a non-square one to its shorter side);
    ``keep_shape`` keeps any image as it is (``(C, H, W)``).
    Raises ``ValueError`` (or PIL's errors) for anything that is not a readable image.
    """
    with Image.open(io.BytesIO(data)) as img:
        arr = upright_pixels(img, data, channels, None if size is None else (size, size))
    if not keep_shape:
        arr = np.array(_square(Image.fromarray(arr[..., 0] if channels == 1 else arr), size, interpolation))
    arr = arr.reshape(*arr.shape[:2], channels)
    return arr.transpose(2, 0, 1)


def upright_pixels(img: Image.Image, data: bytes, channels: int = 3, need: tuple[int, int] | None = None
                   ) -> np.ndarray:
    """``(H, W, channels)`` uint8 pixels of the opened ``img`` (whose file is ``data``), turned upright as the
    camera's orientation tag says. A JPEG is decoded at 1/2, 1/4 or 1/8 of its size where that still gives
    ``need`` (width, height) pixels (Pillow's ``draft``), through ``decode_jpeg`` where it can."""
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"image too large ({img.width}x{img.height})")
    orientation = img.getexif().get(ORIENTATION, 1)
    if img.format == "JPEG" and orientation == 1:
        fast = decode_jpeg(data, channels, need)
        if fast is not None:
            return fast
    mode = "RGB" if channels == 3 else "L"
    if img.format == "JPEG":  # (grey straight from the luma channel, as libjpeg-turbo gives it)
        img.draft(mode, need)
    if orientation != 1:  # (exif_transpose copies the image even when there is nothing to do)
        img = ImageOps.exif_transpose(img)
    arr = np.array(_eight_bit(img).convert(mode), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _square(img: Image.Image, size: int | None, interpolation: str) -> Image.Image:
    """The shorter side resized to ``size`` (kept where None), then the centre square."""
    w, h = img.size
    side = size or min(w, h)
    if min(w, h) != side:
        scale = side / min(w, h)
        img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), RESAMPLING[interpolation])
        w, h = img.size
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return img


class UnreadableImage(DataError):
    """An image that could not be read: the message names it, ``reason`` says why in a few words."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot read image {name}: {reason}")
        self.reason = reason


def unreadable(e: Exception) -> str:
    """Why ``decode_image`` refused a file, in a few words."""
    if isinstance(e, UnreadableImage):
        return e.reason
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image file"
    if isinstance(e, OSError) and e.strerror:  # a missing file, no permission: the system's words alone
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit grayscale (PNG, TIFF) as 8 bits of its full range: PIL's ``convert`` would clip every value
    above 255 to white. Floating-point images have no range to map from and are refused."""
    if img.mode.startswith("I;16") or img.mode == "I":
        return Image.fromarray((np.asarray(img).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8), "L")
    if img.mode == "F":
        raise ValueError("floating-point images are not supported")
    return img


@dataclass
class FolderContents:
    """Decoded images per split (``None`` for a tree without split folders), the classes, the skipped files."""

    sets: dict[str | None, ImageSet]
    classes: list[str]
    skipped: list[str] = field(default_factory=list)


def _place(rel: PurePosixPath) -> tuple[str | None, str] | None:
    """(split, class) of a file at ``rel`` inside the tree, or None where it is not in a class folder."""
    parts = rel.parts
    if len(parts) >= 3 and parts[-3] in SPLITS:
        return parts[-3], parts[-2]
    if len(parts) >= 2 and parts[-2] not in SPLITS:
        return None, parts[-2]
    return None


Entry = tuple[PurePosixPath, Callable[[], bytes] | None, str | None]  # (relative path, reader, why not)


def _walk_folder(root: Path) -> Iterator[Entry]:
    """(relative path, reader of its bytes or None, reason) for every image file and class folder under ``root``."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for d in dirnames:
            yield rel_dir / d, None, "dir"
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = rel_dir / name
            if path.suffix.lower() not in IMAGE_EXTS:
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                yield rel, None, "symbolic link that leaves the data root (copy the files in, or link the root itself)"
                continue
            yield rel, path.read_bytes, None


def _constant(data: bytes) -> Callable[[], bytes]:
    """A reader of bytes already read (an archive's members are read in order, as the walk passes them)."""
    return lambda: data


def _walk_tar(path: Path) -> Iterator[Entry]:
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot open archive {path}: {archive_problem(e)}") from None
    with tf:
        try:
            for m in tf:
                rel = PurePosixPath(m.name.lstrip("/"))
                if m.isdir():
                    yield rel, None, "dir"
                elif PurePosixPath(m.name).suffix.lower() not in IMAGE_EXTS:
                    continue
                elif not m.isfile():
                    yield rel, None, "link inside the archive (not followed)"
                else:
                    f = tf.extractfile(m)
                    data = f.read() if f is not None else b""
                    yield rel, _constant(data), None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"archive {path} is corrupt or truncated: {e}") from None


def _entries(source: Path) -> Iterator[Entry]:
    if not source.exists():
        raise DataError(f"data not found: {source}")
    if source.is_dir():
        return _walk_folder(source)
    if is_archive(source):
        return _walk_tar(source)
    raise DataError(f"{source} is neither a folder nor a .tar/.tar.gz archive of an image tree")


def _in_class_folders(entries: Iterator[Entry], dirs: list[PurePosixPath]) -> Iterator[tuple]:
    """``(relative path, (split, class), reader, reason)`` of the files of ``entries`` that lie in class
    folders; the folders met are appended to ``dirs``."""
    for rel, reader, reason in entries:
        if reason == "dir":
            dirs.append(rel)
        elif (place := _place(rel)) is not None:
            yield rel, place, reader, reason


Groups = dict[tuple[str | None, str], list]  # (split or None, class) -> its images (arrays or file paths)


def _organise(source: Path, groups: Groups, dirs: list[PurePosixPath], names: list[str],
              skipped: list[str] | None = None) -> tuple[Groups, list[str]]:
    """The groups that count (only those inside split folders where there are any), and the classes (those
    of the training split). Class folders that hold no readable image, and classes outside the training
    split, are errors, which say why files were ``skipped`` (one reason each). ``names`` are the relative
    paths of every file met (read or not)."""
    # Folders that hold no readable image are classes too (and an error below), unless they hold class folders.
    ancestors = {p for rel in names for p in PurePosixPath(rel).parents[1:]}
    for d in dirs:
        place = _place(d / "x")
        if place is not None and d not in ancestors and d.name not in SPLITS:
            groups.setdefault(place, [])
    if not groups:
        raise DataError(f"no class folders with images found in {source} "
                        "(expected <class>/<image> or <split>/<class>/<image>)")
    if any(s is not None for s, _ in groups):
        groups = {k: v for k, v in groups.items() if k[0] is not None}
    classes = sorted({c for s, c in groups if s in ("train", None)})
    if not classes:
        raise DataError(f"{source} has no train/ split with class folders")
    empty = sorted(f"{s + '/' if s else ''}{c}" for (s, c), v in groups.items() if not v)
    if empty:
        why = ""
        if skipped:
            reason, n = Counter(skipped).most_common(1)[0]
            why = f"; {n} file{'s' * (n > 1)} skipped: {reason}"
        raise DataError(f"class folder{'s' if len(empty) > 1 else ''} with no readable images in {source}: "
                        + ", ".join(empty[:5]) + why)
    unknown = sorted({c for _, c in groups if c not in classes})
    if unknown:
        raise DataError(f"classes {unknown[:5]} appear in {source} outside the training split: "
                        "every class needs images in train/")
    return groups, classes


def _by_split(groups: Groups, classes: list[str]) -> dict[str | None, tuple[list, list[int]]]:
    """Per split: its items and their class indices, class by class."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in sorted({s for s, _ in groups}, key=str):
        keys = [k for k in groups if k[0] == split]
        out[split] = ([a for k in keys for a in groups[k]], [index[k[1]] for k in keys for _ in groups[k]])
    return out


def list_image_folder(source: Path) -> tuple[dict[str | None, tuple[list[str], list[int]]], list[str]]:
    """The image files of an ImageFolder tree on disk, without reading them: per split ``(paths, labels)``,
    and the classes. The same rules as ``read_image_folder`` (classes come from train/)."""
    if not source.is_dir():
        raise DataError(f"{source} is not a folder: streaming reads an image folder or shards "
                        f"(make shards of an archive with: resnets shard {source} DEST)")
    groups: Groups = {}
    dirs: list[PurePosixPath] = []
    names, reasons = [], []
    for rel, place, _reader, reason in _in_class_folders(_walk_folder(source), dirs):
        names.append(str(rel))
        if reason is None:
            groups.setdefault(place, []).append(str(source / rel))
        else:
            reasons.append(reason)
    groups, classes = _organise(source, groups, dirs, names, reasons)
    return _by_split(groups, classes), classes


def read_image_folder(source: Path, image_size: int | None = None, strict: bool = False) -> FolderContents:
    """Decode every image of an ImageFolder tree (a folder, or a ``.tar``/``.tar.gz`` of one)."""
    groups: Groups = {}
    files: Groups = {}
    skipped: list[str] = []
    reasons: list[str] = []
    dirs: list[PurePosixPath] = []
    size = image_size
    for rel, place, reader, reason in _in_class_folders(_entries(source), dirs):
        if reader is not None:
            try:
                data = reader()
            except OSError as e:
                reason = f"cannot read ({e.strerror or e})"
        if reason is None:
            try:
                arr = decode_image(data, size)
                size = size or arr.shape[-1]
            except Exception as e:  # any undecodable file: PIL raises many kinds
                reason = unreadable(e)
        if reason is not None:
            if strict:
                raise DataError(f"unreadable image {source / rel}: {reason}")
            log.warning("skipped %s: %s", source / rel, reason)
            skipped.append(str(rel))
            reasons.append(reason)
            continue
        groups.setdefault(place, []).append(arr)
        files.setdefault(place, []).append(str(rel))
    names = [*skipped, *(f for v in files.values() for f in v)]
    groups, classes = _organise(source, groups, dirs, names, reasons)
    files = {k: files.get(k, []) for k in groups}
    sets: dict[str | None, ImageSet] = {}
    for (split, (arrays, labels)), (_, (paths, _)) in zip(_by_split(groups, classes).items(),
                                                           _by_split(files, classes).items()):
        sets[split] = ImageSet(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.long), paths)
    return FolderContents(sets, classes, skipped)
