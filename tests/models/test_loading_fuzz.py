"""Property-based fuzzing of the checkpoint reader (hypothesis): random bytes, truncated and bit-flipped torch
zips, pickles with arbitrary opcodes and safetensors files with bad headers, offsets and dtypes. The property:
a dict of tensors, or one ``CheckpointError`` line; never another exception, and nothing in a file ever runs."""
import io
import json
import pickle
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets import CheckpointError
from resnets.models.loading import read_checkpoint

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(tmp_path, data: bytes, suffix: str = ".pt"):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        out = read_checkpoint(path)
    except CheckpointError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return None
    assert isinstance(out, dict)
    return out


@pytest.fixture(scope="module")
def torch_file():
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(4, 3), "b": torch.zeros(4)}, "step": 7}, buf)
    return buf.getvalue()


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".pt", ".pth", ".safetensors"]))
def test_random_bytes_are_refused_in_one_line(tmp_path, data, suffix):
    _read(tmp_path, data, suffix)


@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=8))
def test_truncated_or_bit_flipped_torch_files(tmp_path, torch_file, cut, flips):
    data = bytearray(torch_file[:max(1, int(len(torch_file) * cut))])
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    _read(tmp_path, bytes(data))


@FUZZ
@given(body=st.binary(max_size=512), protocol=st.integers(2, 5))
def test_pickles_with_arbitrary_opcodes_run_nothing(tmp_path, body, protocol):
    marker = tmp_path / "ran"
    # a pickle that would create the marker file if anything unpickled it, then arbitrary opcodes
    evil = (b"\x80" + bytes([protocol]) + b"cbuiltins\nopen\n(" + pickle.dumps(str(marker), 0)[:-1]
            + b"Vw\ntR" + body + b".")
    _read(tmp_path, evil)
    assert not marker.exists()


def _safetensors(header: dict, payload: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + payload


@FUZZ
@given(dtype=st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F99", "", "x"]),
       shape=st.lists(st.integers(-2, 70000), max_size=4), start=st.integers(-8, 4096), end=st.integers(-8, 4096),
       payload=st.integers(0, 512), length=st.one_of(st.none(), st.integers(0, 2 ** 64 - 1)))
def test_safetensors_with_bad_headers_offsets_and_dtypes(tmp_path, dtype, shape, start, end, payload, length):
    header = {"w": {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}, "__metadata__": {"k": "v"}}
    out = _read(tmp_path, _safetensors(header, bytes(payload), length), ".safetensors")
    if out is not None:
        assert list(out) == ["w"] and isinstance(out["w"], torch.Tensor)
