"""Segmentation data: images paired with masks of class indices (255: ignore), read from a folder into memory.

Layouts, by what the folder holds:

- ``images/`` and ``masks/`` (one split; the validation images are held out of it);
- ``train/images``, ``train/masks``, ``val/...`` (and ``test/...``): the splits as given;
- Pascal VOC: ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/{train,val}.txt``
  (the folder itself or a ``VOCdevkit/VOC2012`` inside it).

Images and masks pair by file name (``a.jpg`` with ``a.png``). A mask is a greyscale or palette PNG whose
values are class indices; the class names come from a ``classes.txt`` (one per line), else VOC's 21 for the
VOC layout, else they are numbered up to the largest index found. Every image is kept at its own size.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .folder import MAX_PIXELS, decode_image
from .types import holdout_size

IGNORE = 255  # mask value of pixels that count for nothing (VOC's object borders)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


@dataclass
class MaskSet:
    """One split: uint8 images ``(3, H, W)`` and their uint8 masks ``(H, W)``, each pair at its own size."""

    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int]) -> "MaskSet":
        return MaskSet([self.images[i] for i in indices], [self.masks[i] for i in indices],
                       [self.names[i] for i in indices])


@dataclass
class SegmentationData:
    name: str
    train: MaskSet
    val: MaskSet
    test: MaskSet | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


Pairs = list[tuple[Path, Path]]


def _pairs(images: Path, masks: Path, names: list[str] | None = None) -> Pairs:
    """Each image of ``images`` with its mask in ``masks`` (the ``names`` listed, else all); a name on one side
    only is an error."""
    found = {p.stem: p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    masked = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
    wanted = names if names is not None else sorted(found.keys() | masked.keys())
    lonely = [n for n in wanted if n not in found or n not in masked]
    if lonely:
        side = masks if lonely[0] in found else images
        raise DataError(f"{len(lonely)} image(s) without a mask or masks without an image, e.g. {lonely[0]!r} has "
                        f"nothing in {side}: pair every image with a mask of the same name")
    if not wanted:
        raise DataError(f"no images in {images}: expected .jpg or .png files with .png masks in {masks}")
    return [(found[n], masked[n]) for n in wanted]


def find_pairs(root: Path) -> tuple[dict[str, Pairs], bool]:
    """The image/mask pairs of each split found in ``root`` (``None`` split: one to divide), and whether the
    layout is Pascal VOC's."""
    voc = next((r for r in (root, root / "VOCdevkit" / "VOC2012") if (r / "SegmentationClass").is_dir()), None)
    if voc is not None:
        lists = voc / "ImageSets" / "Segmentation"
        listed = {s: lists / f"{s}.txt" for s in ("train", "val")}
        if not listed["train"].is_file():
            raise DataError(f"{listed['train']} is missing: the VOC layout lists its splits there")
        return {s: _pairs(voc / "JPEGImages", voc / "SegmentationClass", path.read_text().split())
                for s, path in listed.items() if path.is_file()}, True
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return {"all": _pairs(root / "images", root / "masks")}, False
    splits = {s: _pairs(root / s / "images", root / s / "masks") for s in ("train", "val", "test")
              if (root / s / "images").is_dir()}
    if "train" not in splits:
        raise DataError(f"{root} holds no segmentation data: expected images/ and masks/ (or train/images, "
                        f"train/masks ...), or Pascal VOC's JPEGImages/ and SegmentationClass/")
    return splits, False


def read_mask(path: Path) -> np.ndarray:
    """A mask's class indices, uint8 ``(H, W)``: the values of a greyscale PNG, the palette indices of a
    palette PNG (VOC's)."""
    with Image.open(path) as img:
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise DataError(f"mask {path} is too large ({img.size[0]}x{img.size[1]})")
        if img.mode not in ("L", "P"):
            raise DataError(f"mask {path} is {img.mode}: a mask holds one class index per pixel (a greyscale or "
                            f"palette PNG), not colours")
        return np.array(img, dtype=np.uint8)


def _read_pair(image: Path, mask: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        pixels = decode_image(image.read_bytes(), None, keep_shape=True)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {image}: {e}") from None
    m = read_mask(mask)
    if m.shape != pixels.shape[1:]:
        raise DataError(f"image {image.name} is {pixels.shape[2]}x{pixels.shape[1]} but its mask is "
                        f"{m.shape[1]}x{m.shape[0]}: a mask must have its image's size")
    return torch.from_numpy(pixels), torch.from_numpy(m)


def read_split(pairs: Pairs) -> MaskSet:
    images, masks = zip(*(_read_pair(i, m) for i, m in pairs))
    return MaskSet(list(images), list(masks), [i.stem for i, _ in pairs])


def _classes(root: Path, voc: bool, sets: list[MaskSet], known: list[str] | None) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    if voc:
        return list(VOC_CLASSES)
    if known is not None:
        return list(known)
    top = max(int(m.masked_fill(m == IGNORE, 0).max()) for s in sets for m in s.masks)
    return [str(i) for i in range(top + 1)]


def check_masks(split: MaskSet, num_classes: int, where: str) -> None:
    """Every mask value a class index below ``num_classes`` or ``IGNORE``, else an error naming the file."""
    for name, m in zip(split.names, split.masks):
        bad = m[(m >= num_classes) & (m != IGNORE)]
        if len(bad):
            raise DataError(f"mask {name!r} in {where} holds class {int(bad.max())}, but there are {num_classes} "
                            f"classes (0..{num_classes - 1}; {IGNORE} = ignore): fix the mask or list the classes "
                            f"in classes.txt")


def mask_stats(images: list[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) over every pixel of every image."""
    total, squares = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for i in images:
        pixels = i.double() / 255
        total += pixels.sum((1, 2))
        squares += pixels.square().sum((1, 2))
    n = sum(i.shape[1] * i.shape[2] for i in images)
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_segmentation(source: str | Path, val_size: float | None = None, seed: int = 0,
                      classes: list[str] | None = None) -> SegmentationData:
    """A segmentation data set in one of the layouts above, in memory. Without a validation split,
    ``val_size`` (a fraction below 1 or a count; default 0.1) of the training pairs, chosen with ``seed``.
    ``classes``: the class names where the folder names none (those a trained network predicts)."""
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"segmentation data {root} is not a folder: give a folder with images/ and masks/")
    found, voc = find_pairs(root)
    splits = {s: read_split(p) for s, p in found.items()}
    described = {s: f"{len(v)} image/mask pairs from {s}" for s, v in splits.items()}
    if "all" in splits:
        whole = splits.pop("all")
        try:
            held = holdout_size(len(whole), 0.1 if val_size is None else val_size)
        except ValueError as e:
            raise DataError(f"{e}: add image/mask pairs, or give the validation pairs in val/images and "
                            f"val/masks") from None
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed)).tolist()
        splits["train"], splits["val"] = whole.subset(sorted(order[held:])), whole.subset(sorted(order[:held]))
        described = {"train": f"{len(whole) - held} of the {len(whole)} pairs",
                     "val": f"{held} of them held out (seed {seed})"}
    if "val" not in splits or not len(splits["val"]):
        raise DataError(f"{root} has no validation pairs: add val/images and val/masks, or a --val-size above 0")
    names = _classes(root, voc, list(splits.values()), classes)
    for s, v in splits.items():
        check_masks(v, len(names), f"{root} ({s})")
    mean, std = mask_stats(splits["train"].images)
    return SegmentationData(root.name, splits["train"], splits["val"], splits.get("test"), names, mean, std,
                            described)


def encode_png(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """A PNG of a uint8 array: ``(H, W)`` with a ``palette`` as a palette image whose indices are the values
    (so that it reads back as a mask), else ``(H, W)`` greyscale or ``(H, W, 3)`` colour."""
    if palette is not None:
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
        img.putpalette(palette)
    else:
        img = Image.fromarray(array)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def voc_palette(n: int = 256) -> list[int]:
    """Pascal VOC's colour map (bit-interleaved class index), flat RGB for ``n`` indices."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out
