"""CIFAR-10/100 python batches: reading, validation split, refusing bad pickles, missing files."""
import pickle

import numpy as np
import pytest
import torch

from resnets import DataError
from resnets.data import load_data
from tests.conftest import make_cifar_batches


def test_cifar10_batches_load_with_a_held_out_validation_split(tmp_path):
    make_cifar_batches(tmp_path, n_train=100, n_test=20)
    data = load_data("cifar10", root=tmp_path, val_size=10)
    assert data.name == "cifar10" and data.classes[:2] == ["class0", "class1"]
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.bincount(data.val.labels).tolist() == [1] * 10  # stratified
    assert "held out" in data.splits["val"] and "official test" in data.splits["test"]


def test_cifar_pixels_are_in_channel_planes(tmp_path):
    folder = make_cifar_batches(tmp_path, n_train=5, n_test=5)
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    data = load_data("cifar10", root=tmp_path, val_size=1)
    assert torch.equal(data.test.images[0, 1].flatten(), torch.from_numpy(raw[0, 1024:2048]))


def test_cifar100_fine_labels(tmp_path):
    make_cifar_batches(tmp_path, n_train=200, n_test=100, classes=100, kind="cifar100")
    data = load_data("cifar100", root=tmp_path, val_size=100)
    assert data.num_classes == 100 and len(data.test) == 100


def test_batches_folder_given_as_a_path(tmp_path):
    folder = make_cifar_batches(tmp_path)
    assert load_data(str(folder), val_size=5).name == "cifar10"


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 not found in .*cifar-10-batches-py.*--download"):
        load_data("cifar10", root=tmp_path)


def test_pickle_with_code_is_refused(tmp_path):
    folder = make_cifar_batches(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to load builtins.print"):
        load_data("cifar10", root=tmp_path)


@pytest.mark.parametrize("content", [
    {b"labels": [1, 2]},  # no data
    {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},  # wrong row size
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},  # label count
    [1, 2, 3],  # not a dict
])
def test_wrong_batch_contents_are_named(tmp_path, content):
    folder = make_cifar_batches(tmp_path)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DataError, match="data_batch_2"):
        load_data("cifar10", root=tmp_path)


def test_truncated_batch(tmp_path):
    folder = make_cifar_batches(tmp_path)
    path = folder / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="cannot read CIFAR batch .*data_batch_1"):
        load_data("cifar10", root=tmp_path)


def test_download_without_network_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError, match=r"cannot download .*put the extracted 'cifar-10-batches-py' folder"):
        load_data("cifar10", root=tmp_path, download=True)
    assert not list(tmp_path.iterdir())  # no partial archive left


def test_archive_with_the_wrong_md5_is_refused(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the real archive")
    with pytest.raises(DataError, match="has MD5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_data("cifar10", root=tmp_path)


def _archive(tmp_path, suffix, kind="cifar10"):
    import tarfile

    folder = make_cifar_batches(tmp_path / f"src-{suffix}", n_train=100, n_test=20, kind=kind)
    path = tmp_path / f"copy-{kind}{suffix}"
    with tarfile.open(path, "w:" + {".tar.gz": "gz", ".tar.xz": "xz", ".tar": ""}[suffix]) as tf:
        tf.add(folder, arcname=folder.name)
    return path


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz", ".tar"])
def test_an_archive_in_the_cifar_layout_is_read_directly_and_unpacked_once(tmp_path, suffix):
    from resnets.data.datasets import cache_dir

    path = _archive(tmp_path, suffix)
    data = load_data(str(path), val_size=10)
    assert data.name == "cifar10" and (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    unpacked = [p for p in (cache_dir() / "data").iterdir() if p.name.startswith("cifar10-")]
    assert len(unpacked) == 1 and not [p for p in (cache_dir() / "data").iterdir() if p.name.startswith(".")]
    stamp = (unpacked[0] / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns
    again = load_data(str(path), val_size=10)  # the unpacked copy is reused
    assert (unpacked[0] / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns == stamp
    assert torch.equal(again.test.images, data.test.images)


def test_cifar100_archive_and_an_official_name_with_another_md5(tmp_path):
    assert load_data(str(_archive(tmp_path, ".tar.gz", kind="cifar100")), val_size=5).name == "cifar100"
    renamed = _archive(tmp_path, ".tar.gz").rename(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="not the official c58f30108f718f92721af3b95e74349a"):
        load_data(str(renamed))


def test_an_archive_that_escapes_its_folder_is_refused(tmp_path):
    import io
    import tarfile

    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name in ("cifar-10-batches-py/batches.meta", "cifar-10-batches-py/../../escaped"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"data"))
    with pytest.raises(DataError, match="cannot unpack .*evil.tar.gz"):
        load_data(str(path))
    assert not (tmp_path / "escaped").exists()


@pytest.mark.slow
def test_the_lossless_cifar10_archive_is_the_official_data():
    from tests.conftest import SHARED

    path = SHARED / "data" / "cifar-10-lossless-python.tar.xz"
    if not path.is_file():
        pytest.skip(f"the lossless CIFAR-10 archive is not at {path}")
    data = load_data(str(path), val_size=0)
    assert (len(data.train), len(data.test)) == (50_000, 10_000)
    assert data.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert data.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert data.train.images[0, 0, 0, :6].tolist() == [59, 43, 50, 68, 98, 119]
    assert data.test.images[0, 0, 0, :6].tolist() == [158, 159, 165, 166, 160, 156]
    assert [round(m, 4) for m in data.mean] == [0.4914, 0.4822, 0.4465]
