"""CIFAR-10 and CIFAR-100 in their official python format (``cifar-10-batches-py``, ``cifar-100-python``)."""
from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, archive_problem
from .types import ImageSet

# name: (folder inside the archive, archive file, md5, train batches, test batches, label key, meta file, names key)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}
URL = "https://www.cs.toronto.edu/~kriz/"


class _BatchUnpickler(pickle.Unpickler):
    """CIFAR batches hold only dicts, lists, bytes, strings and numbers: refuse anything else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "_codecs":  # bytes pickled by Python 3 with protocol 2
            import codecs

            return codecs.encode
        return getattr(np, name)


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}") from None
    except Exception as e:
        raise DataError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch (it holds a {type(obj).__name__})")
    return obj


def _to_imageset(batches: list[Path], label_key: bytes, classes: int) -> ImageSet:
    images, labels, files = [], [], []
    for path in batches:
        b = _read_batch(path)
        data, y = b.get(b"data"), b.get(label_key)
        if data is None or y is None:
            raise DataError(f"{path} is not a CIFAR batch: keys b'data' and {label_key!r} are required")
        try:
            data = np.asarray(data)
        except Exception:  # ragged lists and the like
            raise DataError(f"{path}: b'data' is not an array of image rows") from None
        y = _labels(y, path, classes)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise DataError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, "
                            f"got {data.dtype} {data.shape} and {len(y)} labels")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(y)
        files += [f"{path.name}[{i}]" for i in range(len(data))]
    return ImageSet(torch.cat(images), torch.cat(labels), files)


def _labels(y: Any, path: Path, classes: int) -> torch.Tensor:
    """A batch's labels as class indices in ``0 .. classes - 1``, or one line naming what is wrong."""
    try:
        labels = torch.as_tensor(list(y), dtype=torch.long)
    except Exception:  # not a sequence, or not of integers
        raise DataError(f"{path}: the labels are not a list of class indices") from None
    if labels.dim() != 1:
        raise DataError(f"{path}: the labels are not a flat list of class indices")
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{path}: class indices must lie in 0..{classes - 1}, found {int(labels.min())}.."
                        f"{int(labels.max())}")
    return labels


def find_cifar_root(name: str, root: Path) -> Path | None:
    """The batches folder for ``name`` at ``root`` or inside it, if present."""
    folder = CIFAR[name][0]
    for cand in (root, root / folder):
        if (cand / CIFAR[name][3][0]).is_file():
            return cand
    return None


def download_cifar(name: str, root: Path) -> Path:
    """Fetch the official archive into ``root``, check its MD5 and unpack it; returns the batches folder."""
    folder, archive, md5 = CIFAR[name][:3]
    root.mkdir(parents=True, exist_ok=True)
    target = root / archive
    if not target.is_file():
        tmp = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(URL + archive, tmp)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {URL + archive} ({e}); without network, put the extracted "
                            f"'{folder}' folder (or '{archive}') in {root}") from None
        tmp.replace(target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != md5:
        raise DataError(f"{target} has MD5 {digest}, expected {md5}: delete it and download again")
    with tarfile.open(target) as tf:
        tf.extractall(root, filter="data")
    return root / folder


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")


def cifar_archive_kind(path: Path) -> str | None:
    """Which CIFAR a ``.tar``/``.tar.gz``/``.tar.xz`` archive holds (its batches folder at the top), or None."""
    if not path.is_file() or not path.name.endswith(ARCHIVE_SUFFIXES):
        return None
    try:
        with tarfile.open(path) as tf:
            first = tf.next()  # only the start of the archive is read
    except (tarfile.TarError, OSError, EOFError):
        return None
    top = first.name.removeprefix("./").split("/")[0] if first is not None else ""
    return next((kind for kind, spec in CIFAR.items() if top == spec[0]), None)


def extract_cifar_archive(kind: str, archive: Path, cache: Path) -> Path:
    """The batches folder of a CIFAR archive, unpacked once into ``cache`` (tarfile's "data" filter refuses
    links and paths that leave the folder) and reused while the archive is unchanged. The official archive,
    by its name, must have its published MD5."""
    folder, official, md5 = CIFAR[kind][:3]
    if archive.name == official:
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != md5:
            raise DataError(f"{archive} has MD5 {digest}, not the official {md5}: download it again (or rename "
                            "a copy you trust)")
    stat = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache / f"{kind}-{key}"
    if find_cifar_root(kind, dest) is None:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{kind}-"))
        try:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
            if find_cifar_root(kind, staging) is None:
                raise DataError(f"{archive} has no complete '{folder}' folder (missing batches)")
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot unpack {archive}: {archive_problem(e)}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    root = find_cifar_root(kind, dest)
    if root is None:  # another process replaced it between the rename and this look
        raise DataError(f"{dest} changed while {archive} was unpacked into it (another run?): run again")
    return root


def load_cifar(name: str, root: Path, download: bool = False) -> tuple[ImageSet, ImageSet, list[str]]:
    """Train and test sets of CIFAR-10 or CIFAR-100 from the pickled batches, and the class names."""
    folder, archive, _, train_b, test_b, label_key, meta, names_key = CIFAR[name]
    base = find_cifar_root(name, root)
    if base is None and (root / archive).is_file() or base is None and download:
        base = download_cifar(name, root)
    if base is None:
        raise DataError(f"{name} not found in {root}: put the extracted '{folder}' folder there "
                        f"(from {URL + archive}), or pass --download")
    names = _read_batch(base / meta).get(names_key, [])
    if not isinstance(names, list):
        raise DataError(f"{base / meta}: {names_key!r} is not a list of class names")
    classes = [c.decode(errors="replace") if isinstance(c, bytes) else str(c) for c in names]
    count = len(classes) or (10 if name == "cifar10" else 100)  # the meta file names them; else the official count
    train = _to_imageset([base / b for b in train_b], label_key, count)
    test = _to_imageset([base / b for b in test_b], label_key, count)
    return train, test, classes or [str(i) for i in range(count)]
