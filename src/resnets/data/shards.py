"""WebDataset tar shards: each sample is ``<key>.jpg`` (or ``.png``, ``.webp`` ...) with ``<key>.cls``, its class
index. A ``dataset.json`` beside the shards lists the classes, the ``counts`` per split, the training split's
channel statistics and every shard's name, sample count, size and sha256. ``resnets shard`` writes them.

Shards are read as a stream from disk or from any URL that fsspec opens (``http(s)://``, ``s3://``, ``gs://``
with s3fs / gcsfs installed), through webdataset's tar iterators. Every shard read to its end is checked
against its sha256; one that does not match is refused by name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import DataError
from ..files import atomic_write

log = logging.getLogger("resnets")

INDEX = "dataset.json"
FORMAT = "resnets-webdataset-v1"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")


@dataclass(frozen=True)
class Shard:
    """One tar file of a split: its location, sample count, size in bytes and sha256."""

    url: str
    count: int
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass
class ShardIndex:
    """What ``dataset.json`` says about a sharded data set."""

    root: str
    classes: list[str]
    splits: dict[str, list[Shard]]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None  # shorter side of the stored images, when re-encoded
    skipped: list[str] = field(default_factory=list)

    def count(self, split: str) -> int:
        return sum(s.count for s in self.splits.get(split, []))


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_shard_dataset(source: str | Path) -> bool:
    """A URL, a folder holding ``dataset.json``, or that file itself."""
    s = str(source)
    if is_url(s):
        return True
    p = Path(s)
    return (p.is_dir() and (p / INDEX).is_file()) or (p.name == INDEX and p.is_file())


def _open(url: str) -> IO[bytes]:
    """A file object reading ``url`` from its start: a local file, or fsspec's streaming reader."""
    if not is_url(url):
        return open(url.removeprefix("file://"), "rb")
    import fsspec

    options: dict[str, Any] = {}
    if url.startswith(("http://", "https://")):
        import aiohttp  # fsspec's HTTP client; a stalled server must end in an error, not a hang

        options = {"block_size": 0, "client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_connect=30, sock_read=120)}}
    return fsspec.open(url, "rb", **options).open()


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def read_index(source: str | Path) -> ShardIndex:
    """``dataset.json`` of a shard folder or URL (or the file itself), checked."""
    s = str(source).rstrip("/")
    url = s if s.endswith(INDEX) else f"{s}/{INDEX}"
    root = url[: -len(INDEX) - 1]
    try:
        with _open(url) as f:
            meta = json.loads(f.read())
    except FileNotFoundError as e:
        if e.__cause__ is not None and getattr(e.__cause__, "status", None) != 404:  # not reached at all
            raise DataError(f"cannot read {url} ({_reason(e.__cause__)}): check the address and that the server "
                            "is reachable") from None
        raise DataError(f"no {INDEX} at {url}: make shards with 'resnets shard SRC DEST' and pass DEST") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{url} is not valid JSON ({e})") from None
    except Exception as e:  # network errors of every kind (aiohttp, botocore, ...)
        raise DataError(f"cannot read {url} ({_reason(e)}): check the address and that the server is reachable") \
            from None
    index = _index(meta, root)
    if index is None:
        raise DataError(f"{url} is not a shard index written by 'resnets shard' (missing or malformed fields)")
    if "train" not in index.splits or not index.splits["train"]:
        raise DataError(f"{url} lists no training shards")
    return index


def _index(meta: Any, root: str) -> ShardIndex | None:
    """The index that ``meta`` (parsed JSON) describes, every field of its own type; None where one is not."""
    try:
        splits = {str(name): [Shard(f"{root}/{d['name']}", int(d["count"]), int(d["bytes"]), str(d["sha256"]))
                              for d in shards] for name, shards in meta["shards"].items()}
        if not isinstance(meta["classes"], list) or any(s.count < 0 or s.bytes < 0 for v in splits.values()
                                                          for s in v):
            return None
        classes = [str(c) for c in meta["classes"]]
        stats = [tuple(float(x) for x in v) if v else None for v in (meta.get("mean"), meta.get("std"))]
        size, skipped = meta.get("image_size"), meta.get("skipped", [])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None
    if not (size is None or (isinstance(size, int) and size > 0)) or not isinstance(skipped, list):
        return None
    return ShardIndex(root, classes, splits, stats[0], stats[1], size, skipped)


def check_local_shards(index: ShardIndex) -> None:
    """Every shard on local disk exists and has its recorded size (a missing or truncated file fails now,
    before training starts, not hours into an epoch). URLs are checked as they are read."""
    for shards in index.splits.values():
        for shard in shards:
            if is_url(shard.url):
                return
            path = Path(shard.url.removeprefix("file://"))
            if not path.is_file():
                raise DataError(f"shard {shard.name} is missing from {path.parent}")
            size = path.stat().st_size
            if size != shard.bytes:
                raise DataError(f"shard {shard.name} has {size} bytes, {INDEX} says {shard.bytes}: it is truncated "
                                "or was changed; copy it again or re-create the shards")


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.n += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def read_shard(shard: Shard, skip: int = 0, take: int | None = None,
               classes: int | None = None) -> Iterator[tuple[str, bytes, int]]:
    """``(key, image bytes, class index)`` of the samples ``skip`` to ``skip + take`` of a shard, in order;
    with ``classes``, a class index outside ``0 .. classes - 1`` is refused.

    Samples before ``skip`` are read but not returned; reading stops after ``take``. A shard read to its end
    is checked against its sha256 and size.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    whole = take is None or skip + take >= shard.count
    try:
        with _open(shard.url) as raw:
            f = _Hashing(raw)
            files = ({**entry, "__url__": shard.name} for entry in tar_file_iterator(f))
            seen = 0
            for sample in group_by_keys(files):
                if take is not None and seen >= skip + take:
                    break
                if seen >= skip:
                    yield _parse(sample, shard, classes)
                seen += 1
            if whole:
                f.drain()
    except FileNotFoundError as e:
        why = f" ({_reason(e.__cause__)})" if e.__cause__ is not None else ""
        raise DataError(f"shard {shard.name} not found at {shard.url}{why}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"shard {shard.name} is truncated or damaged ({_reason(e)}): copy it again or "
                        "re-create the shards") from None
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"cannot read shard {shard.url} ({_reason(e)})") from None
    except Exception as e:  # network errors of every kind
        raise DataError(f"cannot read shard {shard.url} ({_reason(e)}): check the address and the network") \
            from None
    if whole and (f.sha.hexdigest() != shard.sha256 or f.n != shard.bytes):
        raise DataError(f"shard {shard.name} does not match the sha256 in {INDEX}: it is damaged or was changed; "
                        "copy it again or re-create the shards")


def _parse(sample: dict[str, Any], shard: Shard, classes: int | None) -> tuple[str, bytes, int]:
    key = sample["__key__"]
    image = next((sample[k] for k in IMAGE_SUFFIXES if k in sample), None)
    if image is None or "cls" not in sample:
        raise DataError(f"sample {key} of shard {shard.name} has no image or no .cls label")
    try:
        label = int(sample["cls"])
    except ValueError:
        raise DataError(f"sample {key} of shard {shard.name}: .cls is not a class index") from None
    if classes is not None and not 0 <= label < classes:
        raise DataError(f"sample {key} of shard {shard.name}: class index {label} is outside the {classes} classes "
                        f"of {INDEX}: the shards and their index do not belong together; re-create them")
    return key, image, label


class ShardWriter:
    """Writes samples into ``<split>-000000.tar``, ``<split>-000001.tar`` ... of at most ``max_bytes`` each
    (webdataset's TarWriter), each file written under a temporary name and renamed when complete."""

    def __init__(self, dest: Path, split: str, max_bytes: int) -> None:
        self.dest, self.split, self.max_bytes = dest, split, max_bytes
        self.shards: list[dict[str, Any]] = []
        self._writer: Any = None  # webdataset's TarWriter of the shard being written, if any
        self._bytes = self._count = 0  # of that shard

    def write(self, key: str, image: bytes, ext: str, label: int) -> None:
        from webdataset import TarWriter

        size = len(image) + 2048  # two tar headers and the label
        if self._writer is None or (self._bytes + size > self.max_bytes and self._count > 0):
            self._close()
            self._path = self.dest / f"{self.split}-{len(self.shards):06d}.tar"
            self._file = open(self._path.with_suffix(".tar.tmp"), "wb")
            self._writer, self._bytes, self._count = TarWriter(self._file, encoder=False, mtime=0.0), 0, 0
        self._writer.write({"__key__": key, ext: image, "cls": str(label).encode()})
        self._bytes += size
        self._count += 1

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()  # closes the file too
        tmp = self._path.with_suffix(".tar.tmp")
        sha = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        os.replace(tmp, self._path)
        self.shards.append({"name": self._path.name, "count": self._count, "bytes": self._path.stat().st_size,
                            "sha256": sha.hexdigest()})
        self._writer = None

    def close(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards

    def abort(self) -> None:
        """Remove the shard being written (after an error): only whole shards are left in ``dest``."""
        if self._writer is not None:
            for close in (self._writer.close, self._file.close):  # they flush, and may fail as the write did
                with contextlib.suppress(OSError, ValueError):
                    close()
            self._path.with_suffix(".tar.tmp").unlink(missing_ok=True)
            self._writer = None


def write_index(dest: Path, classes: list[str], shards: dict[str, list[dict[str, Any]]], **extra: Any) -> None:
    meta = {"format": FORMAT, "classes": classes,
            "counts": {split: sum(s["count"] for s in v) for split, v in shards.items()},
            "shards": shards, **extra}
    atomic_write(dest / INDEX, lambda f: f.write(json.dumps(meta, indent=1).encode() + b"\n"))


def index_dict(index: ShardIndex) -> dict[str, Any]:
    """The index as plain data (for reports)."""
    return {k: v for k, v in asdict(index).items() if k != "splits"} | {
        "counts": {split: index.count(split) for split in index.splits}}
