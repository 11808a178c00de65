"""Property-based fuzzing of the shard readers (hypothesis): ``dataset.json`` of any JSON shape or of random
bytes, and shards built from arbitrary tar members (missing or bad ``.cls``, class indices out of range,
duplicate keys, ``..`` and absolute names, symlinks and hard links, truncation). The property: a result, or
one ``DataError`` line; never another exception, and nothing written anywhere."""
import hashlib
import io
import json
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets import DataError
from resnets.data.shards import INDEX, Shard, read_index, read_shard

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["shards", "classes", "train", "val", "name", "count", "bytes", "sha256", "mean", "std", "image_size",
        "skipped"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=False) |
                    st.text(max_size=6), lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5), max_leaves=16)
SHARD_ENTRY = st.fixed_dictionaries({}, optional={k: JSON for k in ("name", "count", "bytes", "sha256")})
INDEX_LIKE = st.fixed_dictionaries({}, optional={
    "classes": JSON | st.lists(st.text(max_size=4), max_size=3),
    "shards": JSON | st.dictionaries(st.sampled_from(["train", "val", "test"]), st.lists(SHARD_ENTRY, max_size=2)),
    "mean": JSON, "std": JSON, "image_size": JSON, "skipped": JSON})


def _one_line(e: DataError) -> None:
    assert str(e) and "\n" not in str(e)


def _read_index(folder, text: bytes):
    (folder / INDEX).write_bytes(text)
    try:
        index = read_index(folder)
    except DataError as e:
        _one_line(e)
        return None
    assert index.classes == [str(c) for c in index.classes] and index.splits["train"]
    return index


@FUZZ
@given(meta=JSON | INDEX_LIKE)
def test_any_json_as_the_index(tmp_path, meta):
    _read_index(tmp_path, json.dumps(meta).encode())


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_as_the_index(tmp_path, data):
    _read_index(tmp_path, data)


MEMBER = st.tuples(st.sampled_from(["a", "b", "../up", "/abs", "dir/c", "a"]),  # base names, duplicates too
                   st.sampled_from(["jpg", "png", "cls", "txt", "cls"]),
                   st.sampled_from(["file", "file", "file", "symlink", "hardlink"]),
                   st.binary(max_size=24) | st.sampled_from([b"0", b"3", b"9", b"10", b"-1", b"x", b""]))


def _tar(members, cut: float) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for base, ext, kind, data in members:
            info = tarfile.TarInfo(f"{base}.{ext}")
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "/etc/passwd" if kind == "symlink" else "a.jpg"
                tf.addfile(info)
    raw = buf.getvalue()
    return raw[:max(1, int(len(raw) * cut))] if cut < 1 else raw


@FUZZ
@given(members=st.lists(MEMBER, max_size=6), cut=st.sampled_from([1.0, 1.0, 0.5, 0.9]))
def test_arbitrary_tar_members_as_a_shard(tmp_path, members, cut):
    raw = _tar(members, cut)
    path = tmp_path / "train-000000.tar"
    path.write_bytes(raw)
    before = sorted(tmp_path.rglob("*"))
    shard = Shard(str(path), len(members), len(raw), hashlib.sha256(raw).hexdigest())
    try:
        samples = list(read_shard(shard, classes=10))
    except DataError as e:
        _one_line(e)
        samples = []
    assert sorted(tmp_path.rglob("*")) == before  # a reader never writes, whatever the member names say
    for key, image, label in samples:
        assert isinstance(key, str) and isinstance(image, bytes) and 0 <= label < 10


def test_a_class_index_outside_the_index_is_refused(tmp_path):
    raw = _tar([("a", "jpg", "file", b"not decoded here"), ("a", "cls", "file", b"12")], 1.0)
    path = tmp_path / "train-000000.tar"
    path.write_bytes(raw)
    shard = Shard(str(path), 1, len(raw), hashlib.sha256(raw).hexdigest())
    with pytest.raises(DataError, match="class index 12 is outside the 10 classes of dataset.json"):
        list(read_shard(shard, classes=10))
    assert [label for *_, label in read_shard(shard)] == [12]  # without a class count: no check
