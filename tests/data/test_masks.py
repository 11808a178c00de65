"""Segmentation data: the three layouts, classes, the checks of every pair, and masks written and read back."""
import numpy as np
import pytest
import torch
from conftest import make_mask_folder
from PIL import Image

from resnets.data.masks import IGNORE, VOC_CLASSES, encode_png, load_segmentation, read_mask, voc_palette
from resnets.errors import DataError


def test_one_folder_is_split_and_masks_keep_their_indices(tmp_path):
    make_mask_folder(tmp_path, n=20, size=32)
    data = load_segmentation(tmp_path, val_size=5)
    assert (len(data.train), len(data.val), data.test) == (15, 5, None)
    assert data.classes == ["0", "1", "2"]  # numbered up to the largest index; 255 is not a class
    assert set(data.train.names).isdisjoint(data.val.names)
    mask = data.train.masks[0]
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1, 2, IGNORE}
    image = np.array(Image.open(tmp_path / "images" / f"{data.train.names[0]}.png")).transpose(2, 0, 1)
    assert torch.equal(data.train.images[0], torch.from_numpy(image))
    assert all(0 < s < 1 for s in data.std) and len(data.mean) == 3


def test_split_folders_and_classes_txt(tmp_path):
    make_mask_folder(tmp_path, n=6, size=24, splits=("train", "val", "test"), fmt="jpg")
    (tmp_path / "classes.txt").write_text("sky\nsquare\ndisc\nunused\n")
    data = load_segmentation(tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)
    assert data.classes == ["sky", "square", "disc", "unused"]


def test_pascal_voc_layout(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    palette = voc_palette()
    for name, cls in (("2007_000032", 1), ("2007_000039", 20), ("2007_000063", 15)):
        Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 5:25], mask[4, :] = cls, IGNORE
        (voc / "SegmentationClass" / f"{name}.png").write_bytes(encode_png(mask, palette))
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000063\n")
    data = load_segmentation(tmp_path)
    assert data.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    assert (len(data.train), len(data.val)) == (2, 1) and data.train.images[0].shape == (3, 30, 40)
    assert set(data.val.masks[0].unique().tolist()) == {0, 15, IGNORE}


def test_a_palette_mask_reads_back_as_its_indices(tmp_path):
    values = np.random.default_rng(0).integers(0, 21, (7, 9)).astype(np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(encode_png(values, voc_palette()))
    assert np.array_equal(read_mask(path), values)
    assert Image.open(path).convert("RGB").getpixel((0, 0)) == tuple(voc_palette()[3 * values[0, 0]:][:3])
    assert voc_palette()[3:6] == [128, 0, 0] and voc_palette()[45:48] == [192, 128, 128]  # aeroplane, person


def _break(root, what):
    if what == "value":
        (root / "classes.txt").write_text("a\nb\nc\n")
        mask = np.array(Image.open(root / "masks" / "0003.png"))
        mask[0, 0] = 7
        (root / "masks" / "0003.png").write_bytes(encode_png(mask, voc_palette()))
    elif what == "size":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "0002.png")
    elif what == "unmatched":
        (root / "masks" / "0001.png").rename(root / "masks" / "other.png")
    elif what == "colour":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "masks" / "0000.png")


@pytest.mark.parametrize("what, message", [
    ("value", "mask '0003' in .* holds class 7, but there are 3 classes"),
    ("size", "image 0002.png is 32x32 but its mask is 20x20"),
    ("unmatched", "without a mask or masks without an image, e.g. '0001'"),
    ("colour", "is RGB: a mask holds one class index per pixel"),
])
def test_bad_pairs_are_refused_naming_the_file(tmp_path, what, message):
    make_mask_folder(tmp_path, n=6, size=32)
    _break(tmp_path, what)
    with pytest.raises(DataError, match=message):
        load_segmentation(tmp_path)


def test_too_few_pairs_to_hold_out_validation_is_one_error(tmp_path):
    make_mask_folder(tmp_path, n=3, size=16)
    with pytest.raises(DataError, match="leaves no training or no validation images out of 3: add image/mask pairs"):
        load_segmentation(tmp_path)


def test_a_folder_without_segmentation_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds no segmentation data: expected images/ and masks/"):
        load_segmentation(tmp_path)
