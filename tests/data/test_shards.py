"""WebDataset shards: written by ``make_shards``, read from disk or over HTTP, refused when damaged."""
import hashlib
import json
import tarfile

import pytest

from conftest import make_image_tree
from resnets.data import load_data
from resnets.data.make_shards import make_shards, parse_size
from resnets.data.shards import read_index, read_shard
from resnets.errors import DataError


@pytest.fixture
def tree(tmp_path):
    return make_image_tree(tmp_path / "tree", per_class=10, size=32, fmt="jpg")


@pytest.fixture
def shards(tree, tmp_path):
    make_shards(tree, tmp_path / "shards", shard_size=15_000)
    return tmp_path / "shards"


def test_make_shards_writes_webdataset_tars_and_an_index(shards):
    meta = json.loads((shards / "dataset.json").read_text())
    assert meta["classes"] == ["cat", "dog", "fox"]
    assert meta["counts"] == {"test": 30, "train": 27, "val": 3}  # val: 10% of train, as in memory
    for split, listed in meta["shards"].items():
        assert sum(s["count"] for s in listed) == meta["counts"][split]
        for s in listed:
            data = (shards / s["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
    assert len(meta["shards"]["train"]) > 1
    with tarfile.open(shards / "train-000000.tar") as tf:
        names = tf.getnames()
    assert names[0].endswith(".cls") and names[1].endswith(".jpg") and names[0][:-4] == names[1][:-4]


def test_shards_hold_the_same_images_as_the_folder(tree, shards):
    in_memory = load_data(tree)
    from_shards = load_data(shards, stream=False)
    assert not from_shards.streamed
    key = lambda files: sorted(f.split("/", 1)[1].rsplit(".", 1)[0].replace(".", "_") for f in files)  # noqa: E731
    assert key(in_memory.val.files) == key(["x/" + k for k in from_shards.val.files])
    pairs = sorted(zip(from_shards.test.files, from_shards.test.images))
    order = sorted(range(30), key=lambda i: in_memory.test.files[i])
    assert all((a[1] == in_memory.test.images[i]).all() for a, i in zip(pairs, order))


def test_resize_short_re_encodes_smaller_jpegs(tmp_path):
    tree = make_image_tree(tmp_path / "big", per_class=2, size=96, fmt="png", splits=("train",))
    make_shards(tree, tmp_path / "s", resize_short=48, quality=80, val_size=0)
    index = read_index(tmp_path / "s")
    assert index.image_size == 48 and index.count("train") == 6
    from PIL import Image
    import io

    key, data, label = next(read_shard(index.splits["train"][0]))
    assert Image.open(io.BytesIO(data)).format == "JPEG" and Image.open(io.BytesIO(data)).size == (48, 48)


def test_shards_over_http_equal_shards_on_disk(shards, http_root):
    url = http_root(shards)
    disk, remote = read_index(shards), read_index(url)
    assert remote.classes == disk.classes and remote.count("train") == 27
    a = [s for shard in disk.splits["train"] for s in read_shard(shard)]
    b = [s for shard in remote.splits["train"] for s in read_shard(shard)]
    assert a == b
    assert load_data(url, crop_size=28).streamed


def test_a_changed_shard_is_refused_by_name(shards):
    path = shards / "train-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first image: same size, other bytes
    path.write_bytes(bytes(data))
    shard = read_index(shards).splits["train"][1]
    with pytest.raises(DataError, match="shard train-000001.tar does not match the sha256"):
        list(read_shard(shard))


def test_a_truncated_or_missing_shard_is_refused_before_training(shards):
    path = shards / "train-000000.tar"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="train-000000.tar has 3000 bytes.*truncated"):
        load_data(shards)
    path.unlink()
    with pytest.raises(DataError, match="shard train-000000.tar is missing"):
        load_data(shards)


def test_a_truncated_shard_read_as_a_stream_is_one_clear_error(shards, http_root):
    path = shards / "train-000000.tar"
    path.write_bytes(path.read_bytes()[:2500])
    shard = read_index(http_root(shards)).splits["train"][0]
    with pytest.raises(DataError, match="train-000000.tar"):
        list(read_shard(shard))


def test_an_unreachable_url_is_one_clear_error():
    with pytest.raises(DataError, match=r"cannot read http://127.0.0.1:9/dataset.json .*reachable"):
        load_data("http://127.0.0.1:9")


def test_a_folder_without_an_index_at_a_url_says_how_to_make_one(tmp_path, http_root):
    with pytest.raises(DataError, match="no dataset.json at .*resnets shard"):
        load_data(http_root(tmp_path))


def test_make_shards_refuses_bad_settings_and_keeps_existing_files(tree, tmp_path):
    dest = tmp_path / "used"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        make_shards(tree, dest)
    assert (dest / "keep.txt").read_text() == "mine"
    with pytest.raises(DataError, match="quality"):
        make_shards(tree, tmp_path / "new", quality=0)
    assert parse_size("256MB") == 256_000_000 and parse_size("1.5G") == 1_500_000_000
    with pytest.raises(DataError, match="not a size"):
        parse_size("big")


def test_make_shards_skips_unreadable_images_or_fails_with_strict(tree, tmp_path):
    (tree / "train" / "cat" / "0002.jpg").write_bytes(b"broken")
    counts = make_shards(tree, tmp_path / "a", val_size=0)
    assert counts["train"] == 29
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["skipped"] == ["train/cat/0002.jpg"]
    with pytest.raises(DataError, match="unreadable image train/cat/0002.jpg"):
        make_shards(tree, tmp_path / "b", strict=True)
    assert not (tmp_path / "b" / "dataset.json").exists()


def test_make_shards_reads_a_tar_of_a_tree(tree, tmp_path):
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tree, arcname="tree")
    assert make_shards(archive, tmp_path / "s") == {"test": 30, "train": 27, "val": 3}


def test_the_validation_split_of_shards_is_theirs_or_none(shards):
    assert len(load_data(shards, val_size=0).val) == 0
    assert len(load_data(shards).val) == 3
    with pytest.raises(DataError, match="fixed when they were written"):
        load_data(shards, val_size=0.2)
