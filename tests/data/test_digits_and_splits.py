"""The embedded digits, the fixed validation split, channel statistics."""
import pytest
import torch

from resnets import DataError
from resnets.data import ImageSet, load_data
from resnets.data.types import channel_stats, split_off, take


def test_digits_fixed_split():
    data = load_data("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 180, 360)
    assert data.in_chans == 1 and data.image_size == 32 and data.num_classes == 10
    again = load_data("digits")
    assert torch.equal(data.val.labels, again.val.labels) and data.val.files == again.val.files
    assert not set(data.train.files) & set(data.val.files) and not set(data.train.files) & set(data.test.files)


def test_split_off_is_stratified_and_disjoint():
    labels = torch.arange(100) % 4
    data = ImageSet(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, [str(i) for i in range(100)])
    rest, held = split_off(data, 20, seed=3)
    assert torch.bincount(held.labels).tolist() == [5, 5, 5, 5]
    assert sorted(rest.files + held.files, key=int) == data.files


def test_take_is_class_balanced_even_when_stored_class_by_class():
    labels = torch.arange(4).repeat_interleave(25)  # like an image tree: class 0 first, then 1, ...
    data = ImageSet(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2), labels)
    part = take(data, 20)
    assert torch.bincount(part.labels).tolist() == [5, 5, 5, 5]
    assert torch.equal(take(data, 20).images, part.images)  # fixed by the seed
    assert take(data, None) is data and take(data, 500) is data


def test_channel_stats_match_a_direct_computation():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk_bytes=7 * 8 * 3 * 8 * 8)  # 7 images a chunk
    f = x.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), f.mean((0, 2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), f.std((0, 2, 3), unbiased=False),
                               atol=1e-4, rtol=0)


def test_unknown_source():
    with pytest.raises(DataError, match="data not found: 'imagenet21k'"):
        load_data("imagenet21k")


def test_validation_size_out_of_range():
    with pytest.raises(DataError, match="validation size"):
        load_data("digits", val_size=5000)


def test_no_validation_split_trains_on_everything():
    full, none = load_data("digits"), load_data("digits", val_size=0)
    assert len(none.val) == 0 and none.val.images.shape[1:] == full.train.images.shape[1:]
    assert len(none.train) == len(full.train) + len(full.val) and none.splits["val"].startswith("none")
    assert len(none.test) == len(full.test)
