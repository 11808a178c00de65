"""ImageFolder trees and tar archives: layouts, caching, unreadable and hostile files."""
import logging
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from resnets import DataError
from resnets.data import load_data
from resnets.data.folder import decode_image, read_image_folder
from tests.conftest import make_image_tree


def _tar(src, dest, mode="w:gz"):
    with tarfile.open(dest, mode) as tf:
        tf.add(src, arcname="tree")
    return dest


def test_tree_with_train_and_test(image_tree):
    data = load_data(image_tree, val_size=3)
    assert data.classes == ["cat", "dog", "fox"]
    assert (len(data.train), len(data.val), len(data.test)) == (21, 3, 24)
    assert data.train.images.shape[1:] == (3, 32, 32)
    assert data.test.files[0] == "test/cat/0000.png"
    # the colour that marks each class survives decoding
    assert data.test.images[data.test.labels == 1][:, 1].float().mean() > 150


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w", ".tar")])
def test_tar_archive_equals_the_folder(image_tree, tmp_path, mode, suffix):
    archive = _tar(image_tree, tmp_path / f"tree{suffix}", mode)
    a, b = load_data(image_tree, val_size=3), load_data(archive, val_size=3)
    assert a.classes == b.classes
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_val_folder_is_used_when_present(tmp_path):
    root = make_image_tree(tmp_path / "t", splits=("train", "val", "test"), per_class=4)
    data = load_data(root)
    assert len(data.val) == 12 and "val/" in data.splits["val"]


def test_flat_tree_without_splits(tmp_path):
    root = make_image_tree(tmp_path / "t", splits=("train",), per_class=10) / "train"
    data = load_data(root, val_size=0.2)
    assert (len(data.train), len(data.val), data.test) == (24, 6, None)


def test_images_of_other_sizes_are_resized_and_cropped(tmp_path):
    root = make_image_tree(tmp_path / "t", per_class=3)
    Image.new("RGB", (80, 40), (255, 0, 0)).save(root / "train" / "cat" / "wide.png")
    data = load_data(root, val_size=1)
    assert data.image_size == 32 and len(data.train) + len(data.val) == 10
    data64 = load_data(root, val_size=1, image_size=64)
    assert data64.image_size == 64


def test_second_load_comes_from_the_cache(image_tree, monkeypatch):
    first = load_data(image_tree, val_size=3)
    import resnets.data.datasets as ds

    monkeypatch.setattr(ds, "read_image_folder", lambda *a, **k: pytest.fail("decoded again"))
    second = load_data(image_tree, val_size=3)
    assert torch.equal(first.train.images, second.train.images)


def test_cache_is_rebuilt_when_files_change(image_tree):
    n = len(load_data(image_tree, val_size=3).test)
    (image_tree / "test" / "cat" / "0000.png").unlink()
    assert len(load_data(image_tree, val_size=3).test) == n - 1


def test_corrupt_image_is_skipped_with_a_warning_naming_it(image_tree, caplog):
    (image_tree / "train" / "dog" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (image_tree / "train" / "dog" / "0004.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="resnets"):
        data = load_data(image_tree, val_size=3)
    assert sorted(data.skipped) == ["train/dog/0003.png", "train/dog/0004.jpg"]
    assert "0003.png" in caplog.text and "not a recognised image" in caplog.text
    assert len(data.train) + len(data.val) == 23


def test_truncated_jpeg_is_skipped(image_tree):
    good = image_tree / "train" / "cat" / "0000.png"
    Image.open(good).save(image_tree / "train" / "cat" / "big.jpg", quality=90)
    path = image_tree / "train" / "cat" / "big.jpg"
    path.write_bytes(path.read_bytes()[:200])
    data = load_data(image_tree, val_size=3)
    assert data.skipped == ["train/cat/big.jpg"]


def test_strict_fails_on_the_first_unreadable_image(image_tree):
    (image_tree / "train" / "fox" / "0001.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"unreadable image .*train/fox/0001.png"):
        load_data(image_tree, strict=True)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="data not found"):
        load_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders with images"):
        load_data(tmp_path / "empty")


def test_class_folder_without_images_is_named(image_tree):
    (image_tree / "train" / "owl").mkdir()
    with pytest.raises(DataError, match="class folder with no readable images .*train/owl"):
        load_data(image_tree)


def test_class_folder_of_only_broken_images_is_named(image_tree, tmp_path):
    for f in (image_tree / "train" / "dog").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(DataError, match="train/dog"):
        load_data(image_tree)


def test_symlink_that_leaves_the_root_is_not_followed(image_tree, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (32, 32)).save(outside)
    os.symlink(outside, image_tree / "train" / "cat" / "link.png")
    data = load_data(image_tree, val_size=3)
    assert "train/cat/link.png" in data.skipped


def test_links_inside_archives_are_not_followed(image_tree, tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(image_tree, arcname="tree")
        info = tarfile.TarInfo("tree/train/cat/escape.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    data = load_data(archive, val_size=3)
    assert data.skipped == ["tree/train/cat/escape.png"]


def test_truncated_archive_is_a_clear_error(image_tree, tmp_path):
    archive = _tar(image_tree, tmp_path / "t.tar.gz")
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_data(archive)


@pytest.mark.parametrize("name", ["x.tar.gz", "x.tar"])
def test_not_an_archive(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"hello")
    with pytest.raises(DataError) as caught:
        load_data(path)
    # one line, not tarfile's line per compression it tried
    assert str(caught.value) == (f"cannot open archive {path}: "
                                 "not a tar archive (plain, gzip, bzip2 or xz), or a damaged one")


def test_huge_dimensions_are_refused():
    import io

    img = Image.new("L", (1, 1))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # claim 100000 x 100000 in the IHDR chunk
    with pytest.raises((OSError, Image.DecompressionBombError)):  # PIL refuses; nothing is allocated
        decode_image(bytes(data), 32)


def test_random_bytes_never_crash_the_reader(tmp_path):
    rng = np.random.default_rng(1)
    root = make_image_tree(tmp_path / "t", per_class=3)
    for i in range(20):
        (root / "train" / "cat" / f"fuzz{i}.jpg").write_bytes(rng.bytes(int(rng.integers(0, 2000))))
    contents = read_image_folder(root)
    assert len(contents.skipped) == 20 and len(contents.sets["train"]) == 9


def test_grayscale_decoding():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 100, 0)).save(buf, format="PNG")
    arr = decode_image(buf.getvalue(), 32, channels=1)
    assert arr.shape == (1, 32, 32)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_grayscale_keeps_its_range(channels):
    import io

    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)  # 0 .. 65472
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    arr = decode_image(buf.getvalue(), 32, channels=channels)
    assert arr.shape == (channels, 32, 32)
    assert all(np.array_equal(a, (ramp >> 8).astype(np.uint8)) for a in arr)  # not clipped to white at 255


def test_floating_point_images_are_refused():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(buf, format="TIFF")
    with pytest.raises(ValueError, match="floating-point images"):
        decode_image(buf.getvalue(), 8)


def test_the_camera_orientation_tag_is_applied():
    import io

    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image must turn 90 degrees clockwise to be upright
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", exif=exif)
    arr = decode_image(buf.getvalue(), None).transpose(1, 2, 0)
    upright = np.rot90(pixels, k=-1)  # 48 high, 32 wide
    np.testing.assert_array_equal(arr, upright[8:40])  # centre-cropped to 32 x 32
    assert not np.array_equal(arr, pixels[:, 8:40])  # what ignoring the tag would give


def test_a_class_of_only_outside_links_says_why_it_is_empty(image_tree, tmp_path):
    """Photos linked in from elsewhere (a common way to arrange a validation set) are not followed, and the
    error says so instead of calling the folder empty."""
    from resnets.data.folder import list_image_folder

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for f in (image_tree / "train" / "dog").iterdir():
        f.rename(outside / f.name)
        os.symlink(outside / f.name, f)
    for read in (load_data, list_image_folder):
        with pytest.raises(DataError, match=r"train/dog; \d+ files? skipped: symbolic link that leaves the data root"):
            read(image_tree)
