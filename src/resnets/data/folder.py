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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .types import ImageSet

log = logging.getLogger("resnets")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "val", "test")
MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs)


def is_archive(path: Path) -> bool:
    return path.name.endswith((".tar", ".tar.gz", ".tgz"))


def decode_image(data: bytes, size: int | None, channels: int = 3) -> np.ndarray:
    """Decode one image file to uint8 ``(C, size, size)``: shorter side resized to ``size``, centre-cropped.

    ``size=None`` keeps a square image as it is (and centre-crops a non-square one to its shorter side).
    Raises ``ValueError`` (or PIL's errors) for anything that is not a readable image.
    """
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"image too large ({w}x{h})")
        if img.format == "JPEG" and size is not None:
            img.draft("RGB" if channels == 3 else "L", (size, size))
        img = ImageOps.exif_transpose(img)  # upright as the camera's orientation tag says
        img = _eight_bit(img).convert("RGB" if channels == 3 else "L")
        w, h = img.size
        side = size or min(w, h)
        if min(w, h) != side:
            scale = side / min(w, h)
            img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
            w, h = img.size
        if (w, h) != (side, side):
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
        arr = np.array(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def unreadable(e: Exception) -> str:
    """Why ``decode_image`` refused a file, in a few words."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image file"
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


def _walk_folder(root: Path) -> Iterator[tuple[PurePosixPath, bytes | None, str | None]]:
    """(relative path, bytes or None, reason) for every file and class folder under ``root``."""
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
                yield rel, None, "symbolic link that leaves the data root"
                continue
            try:
                yield rel, path.read_bytes(), None
            except OSError as e:
                yield rel, None, f"cannot read ({e.strerror or e})"


def _walk_tar(path: Path) -> Iterator[tuple[PurePosixPath, bytes | None, str | None]]:
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot open archive {path}: {e}") from None
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
                    yield rel, f.read() if f is not None else b"", None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"archive {path} is corrupt or truncated: {e}") from None


def read_image_folder(source: Path, image_size: int | None = None, strict: bool = False) -> FolderContents:
    """Decode every image of an ImageFolder tree (a folder, or a ``.tar``/``.tar.gz`` of one)."""
    if not source.exists():
        raise DataError(f"data not found: {source}")
    if source.is_dir():
        entries = _walk_folder(source)
    elif is_archive(source):
        entries = _walk_tar(source)
    else:
        raise DataError(f"{source} is neither a folder nor a .tar/.tar.gz archive of an image tree")

    images: dict[tuple[str | None, str], list[np.ndarray]] = {}
    files: dict[tuple[str | None, str], list[str]] = {}
    skipped: list[str] = []
    dirs: list[PurePosixPath] = []
    size = image_size
    for rel, data, reason in entries:
        if reason == "dir":
            dirs.append(rel)
            continue
        place = _place(rel)
        if place is None:
            continue
        if data is not None:
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
            continue
        images.setdefault(place, []).append(arr)
        files.setdefault(place, []).append(str(rel))

    # Folders that hold no readable image are classes too (and an error below), unless they hold class folders.
    ancestors = {p for rel in [*skipped, *(f for v in files.values() for f in v)] for p in PurePosixPath(rel).parents[1:]}
    for d in dirs:
        place = _place(d / "x")
        if place is not None and d not in ancestors and d.name not in SPLITS:
            images.setdefault(place, [])
            files.setdefault(place, [])

    if not images:
        raise DataError(f"no class folders with images found in {source} "
                        "(expected <class>/<image> or <split>/<class>/<image>)")
    with_split = {s for s, _ in images if s is not None}
    if with_split:
        images = {k: v for k, v in images.items() if k[0] is not None}
    classes = sorted({c for s, c in images if s in ("train", None)})
    if not classes:
        raise DataError(f"{source} has no train/ split with class folders")
    empty = sorted(f"{s + '/' if s else ''}{c}" for (s, c), v in images.items() if not v)
    if empty:
        raise DataError(f"class folder{'s' if len(empty) > 1 else ''} with no readable images in {source}: "
                        + ", ".join(empty[:5]))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for _, c in images if c not in index})
    if unknown:
        raise DataError(f"classes {unknown[:5]} appear in {source} outside the training split")

    sets: dict[str | None, ImageSet] = {}
    for split in sorted({s for s, _ in images}, key=str):
        keys = [k for k in images if k[0] == split]
        arrays = [a for k in keys for a in images[k]]
        labels = [index[k[1]] for k in keys for _ in images[k]]
        names = [f for k in keys for f in files[k]]
        sets[split] = ImageSet(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.long), names)
    return FolderContents(sets, classes, skipped)
