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
