"""Streamed data: which process and worker reads what, exact mid-epoch resume, and failures in workers."""
import os
import signal

import numpy as np
import pytest
import torch

from conftest import make_image_tree
from resnets.data import load_data
from resnets.data.make_shards import make_shards
from resnets.data.sources import images_of
from resnets.data.stream import StreamLoader, file_batches, segments, shard_plan
from resnets.data.transforms import SampleTransform
from resnets.errors import DataError

RRC = SampleTransform(32, 24, scale=(0.3, 1.0), flip=True, seed=1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("stream") / "tree", per_class=20, size=32, fmt="jpg")


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory):
    dest = tmp_path_factory.mktemp("shards") / "shards"
    make_shards(tree, dest, shard_size=12_000)  # about a dozen images per shard
    return dest


def keys(loader, epoch=0, start=0):
    return [b.keys for b in loader.raw_batches(epoch, start)]


def test_file_batches_use_every_sample_once_across_processes():
    parts = [file_batches(103, 8, epoch=2, seed=0, rank=r, world=3, shuffle=True, drop_last=True) for r in range(3)]
    assert {len(p) for p in parts} == {4}  # 103 // 3 = 34 each, 4 whole batches of 8
    seen = np.concatenate([b for p in parts for b in p])
    assert len(seen) == len(set(seen.tolist())) == 96
    again = file_batches(103, 8, epoch=2, seed=0, rank=0, world=3, shuffle=True, drop_last=True)
    other = file_batches(103, 8, epoch=3, seed=0, rank=0, world=3, shuffle=True, drop_last=True)
    assert all(np.array_equal(a, b) for a, b in zip(parts[0], again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts[0], other))


def test_segments_cover_a_range_of_shards_read_end_to_end():
    assert segments([5, 5, 5], [2, 0, 1], 3, 12) == [(2, 3, 2), (0, 0, 5), (1, 0, 2)]


def test_shard_plans_split_samples_between_processes_and_workers():
    counts, batch, world, workers = [13, 7, 10, 12, 9], 4, 2, 3
    taken, steps = [], []
    for rank in range(world):
        numbers = []
        for w in range(workers):
            plan = shard_plan(counts, batch, epoch=1, seed=0, rank=rank, world=world, worker=w, workers=workers,
                              shuffle=True)
            taken += [(s, i) for s, skip, take in plan.runs for i in range(skip, skip + take)]
            assert sum(t for _, _, t in plan.runs) == len(plan.batch_numbers) * batch
            numbers += plan.batch_numbers
        assert sorted(numbers) == list(range(len(numbers)))  # each batch number once
        steps.append(len(numbers))
    assert steps[0] == steps[1] == (51 // 2) // 4
    assert len(taken) == len(set(taken)) == 2 * 6 * 4  # disjoint; 51 - 48 samples left out this epoch
    # evaluation: every sample exactly once
    ev = [(s, i) for r in range(world) for w in range(workers) for s, skip, take in
          shard_plan(counts, batch, epoch=0, seed=0, rank=r, world=world, worker=w, workers=workers,
                     shuffle=False).runs for i in range(skip, skip + take)]
    assert sorted(ev) == [(s, i) for s in range(5) for i in range(counts[s])]


def test_folder_batches_do_not_depend_on_workers_and_resume_exactly(tree):
    data = load_data(tree, stream=True, val_size=0, image_size=32)
    loaders = [StreamLoader(data.train, RRC, 8, shuffle=True, drop_last=True, seed=5, workers=w) for w in (0, 2)]
    full = [keys(loaders[0], epoch=1), keys(loaders[1], epoch=1)]
    assert full[0] == full[1] and len(full[0]) == 7
    assert keys(loaders[1], epoch=1, start=4) == full[0][4:]
    a = [b.images for b in loaders[0].raw_batches(1)]
    b = [b.images for b in loaders[1].raw_batches(1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # the same crops, whichever worker made them
    assert keys(loaders[1], epoch=2) != full[0]
    for loader in loaders:
        loader.close()


def test_shard_batches_resume_exactly_and_processes_read_disjoint_samples(shards):
    data = load_data(shards, image_size=32)
    assert data.streamed and len(data.train) == 54
    mk = lambda rank, world, workers: StreamLoader(data.train, RRC, 4, shuffle=True, drop_last=True,  # noqa: E731
                                                   seed=0, rank=rank, world=world, workers=workers)
    loader = mk(0, 1, 2)
    full = keys(loader, epoch=3)
    assert len(full) == len(loader) == 13
    assert keys(loader, epoch=3, start=5) == full[5:]  # a run stopped after 5 steps sees the same rest
    assert keys(loader, epoch=4) != full
    loader.close()
    per_rank = [[k for b in keys(mk(r, 2, 1), epoch=0) for k in b] for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 24 and not set(per_rank[0]) & set(per_rank[1])


def test_streamed_and_in_memory_evaluation_images_agree(tree):
    streamed = load_data(tree, stream=True, val_size=0)
    memory = load_data(tree, stream=False, val_size=0)
    assert streamed.streamed and not memory.streamed
    assert torch.equal(images_of(streamed.test, 60), memory.test.images)
    assert streamed.test.source.labels == memory.test.labels.tolist()


def test_folder_too_big_for_memory_is_streamed(tree, monkeypatch):
    monkeypatch.setattr("resnets.data.sources.memory_bytes", lambda: 100_000)  # 100 kB: far too small
    assert load_data(tree, val_size=0).streamed
    assert not load_data(tree, val_size=0, stream=False).streamed


def test_unreadable_images_are_skipped_and_counted_or_fail_with_strict(tmp_path):
    tree = make_image_tree(tmp_path / "t", per_class=6, size=32, fmt="jpg", splits=("train",))
    (tree / "train" / "dog" / "0003.jpg").write_bytes(b"\xff\xd8 truncated")
    data = load_data(tree, stream=True, val_size=0)
    loader = StreamLoader(data.train, RRC, 6, shuffle=True, drop_last=True, workers=1)
    assert sum(len(b.keys) for b in loader.raw_batches()) == 17
    assert len(loader.skipped) == 1 and "dog/0003.jpg" in loader.skipped[0]
    strict = StreamLoader(data.train, RRC, 6, shuffle=True, drop_last=True, workers=1, strict=True)
    with pytest.raises(DataError, match=r"unreadable image .*dog/0003.jpg"):
        list(strict.raw_batches())
    loader.close()
    strict.close()


def test_a_worker_that_dies_is_one_clear_error(tree, monkeypatch):
    data = load_data(tree, stream=True, val_size=0)

    def die(key):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr("resnets.data.stream.sample_id", die)  # inherited by the forked workers
    loader = StreamLoader(data.train, RRC, 8, shuffle=True, drop_last=True, workers=1)
    with pytest.raises(DataError, match="worker process died.*--workers 0"):
        list(loader.raw_batches())
    loader.close()


def test_streaming_refuses_what_it_cannot_stream(tmp_path):
    with pytest.raises(DataError, match="streaming reads an image folder or shards"):
        load_data("digits", stream=True)
    archive = tmp_path / "t.tar"
    archive.write_bytes(b"")
    with pytest.raises(DataError, match="resnets shard"):
        load_data(archive, stream=True)


def test_a_val_class_missing_from_train_is_refused(tmp_path):
    tree = make_image_tree(tmp_path / "t", per_class=2, splits=("train", "val"))
    make_image_tree(tmp_path / "extra", classes=("owl",), per_class=1, splits=("val",))
    (tree / "val" / "owl").mkdir()
    (tmp_path / "extra" / "val" / "owl" / "0000.png").rename(tree / "val" / "owl" / "0000.png")
    with pytest.raises(DataError, match=r"\['owl'\] appear .* outside the training split"):
        load_data(tree, stream=True)


def test_repeated_file_batches_put_the_copies_of_an_image_on_different_processes():
    n, repeats = 600, 3
    parts = [file_batches(n, 16, epoch=1, seed=0, rank=r, world=2, shuffle=True, drop_last=True, repeats=repeats)
             for r in range(2)]
    entries = np.concatenate([np.stack(p) for p in parts])
    assert entries.size == 512 and sum(b.size for b in parts[0]) == 256  # 600 -> 512 (whole 256s), half each
    files, copies = np.divmod(entries, repeats)
    assert set(np.unique(copies)) == {0, 1, 2}
    flat = [np.concatenate(p) for p in parts]  # the global order, every world-th entry to a process
    merged = np.empty(512, dtype=flat[0].dtype)
    merged[0::2], merged[1::2] = flat
    f, c = np.divmod(merged, repeats)
    groups = f[: 510].reshape(-1, 3)
    assert (groups == groups[:, :1]).all() and (c[:510].reshape(-1, 3) == [0, 1, 2]).all()  # copies in a row
    assert len(set(f.tolist())) == 171  # a third of the images, each three times (the last one cut short)
    plain = file_batches(n, 16, epoch=1, seed=0, rank=0, world=1, shuffle=True, drop_last=True)
    assert np.concatenate(plain).max() < n  # repeats=1: entries are the file indices


def test_streamed_repeats_augment_each_copy_and_resume_exactly(tree, shards):
    data = load_data(tree, stream=True, val_size=0, image_size=32)
    loader = StreamLoader(data.train, RRC, 6, shuffle=True, drop_last=True, seed=5, repeats=3)
    batches = list(loader.raw_batches(0))
    assert len(loader) == len(batches) == 10  # an epoch of 60 samples (under 256: all): 20 images, 3 copies each
    first = batches[0]
    assert first.keys[0] + "#1" == first.keys[1] and first.keys[0] + "#2" == first.keys[2]
    assert not torch.equal(first.images[0], first.images[1])  # each copy cropped and flipped on its own
    assert keys(loader, 0, start=4) == [b.keys for b in batches[4:]]
    loader.close()
    streamed_shards = load_data(shards, val_size=0, image_size=32)
    with pytest.raises(DataError, match="repeated augmentation needs an image folder"):
        StreamLoader(streamed_shards.train, RRC, 6, shuffle=True, repeats=3)


def test_shards_refuse_choosing_images_by_class_in_one_line():
    """Shards are read in sequence: a class-balanced subset (``take``, ``--subset``) needs files or memory."""
    from resnets.data.shards import Shard
    from resnets.data.stream import ShardList, StreamSet
    from resnets.data.types import take
    from resnets.errors import DataError

    shards = StreamSet(ShardList([Shard("train-000000.tar", 4, 4096, "0" * 64)]), image_size=32)
    for choose in (lambda: shards.labels, lambda: shards.subset(torch.tensor([0])), lambda: take(shards, 1)):
        with pytest.raises(DataError, match="choosing images by class needs an image folder or in-memory data"):
            choose()
