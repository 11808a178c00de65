"""Atomic checkpoint writes."""
import pytest
import torch

from resnets.engine.checkpoint import load_training_checkpoint, save_checkpoint
from resnets.errors import CheckpointError
from resnets.files import atomic_write


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    described = {"config": {"model": "resnet20"}, "classes": ["a"], "in_chans": 1, "mean": [0.5], "std": [0.2],
                 "image_size": 8}
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, **described})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert torch.equal(load_training_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, lambda f: f.write(b"one"))
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"


def test_a_plain_state_dict_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a resnets training checkpoint"):
        load_training_checkpoint(path)
