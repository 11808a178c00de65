"""Property-based fuzzing of the CIFAR batch reader (hypothesis): batches whose data has any shape and dtype,
whose labels are of any type or out of range, pickles truncated anywhere. The property: the data set, with every
label a class index of its classes, or one ``DataError`` line; never another exception."""
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets import DataError
from resnets.data import load_data
from tests.conftest import make_cifar_batches

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
DATA = st.one_of(
    st.tuples(st.integers(0, 4), st.sampled_from([3072, 3071, 100]), st.sampled_from(["uint8", "float32", "int64"]))
    .map(lambda s: np.zeros(s[:2], s[2])),
    st.just(np.zeros((2, 32, 32, 3), np.uint8)), st.lists(st.integers(0, 255), max_size=4), st.none(),
    st.text(max_size=4), st.integers())
LABELS = st.one_of(st.lists(st.integers(-2, 12), max_size=5), st.lists(st.text(max_size=2), max_size=3),
                   st.integers(), st.none(), st.binary(max_size=3), st.lists(st.lists(st.integers(0, 3), max_size=2),
                                                                              max_size=2))


def _load(root):
    try:
        data = load_data("cifar10", root=root, val_size=0)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return None
    labels = data.train.labels
    assert labels.min() >= 0 and labels.max() < len(data.classes)
    return data


@FUZZ
@given(data=DATA, labels=LABELS)
def test_batches_of_any_content(tmp_path_factory, data, labels):
    root = tmp_path_factory.mktemp("cifar")
    folder = make_cifar_batches(root)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    _load(root)


@FUZZ
@given(cut=st.floats(0, 1), name=st.sampled_from(["data_batch_1", "test_batch", "batches.meta"]))
def test_batches_truncated_anywhere(tmp_path_factory, cut, name):
    root = tmp_path_factory.mktemp("cifar")
    path = make_cifar_batches(root) / name
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * cut)])
    _load(root)
