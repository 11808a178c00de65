"""Safe writes (``resnets.files``): a folder that takes no new file is one error naming the file asked for."""
import errno
import subprocess
import sys
import tempfile

import pytest

from resnets.files import atomic_write


def test_a_folder_that_takes_no_new_file_names_the_destination(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", f"{tmp_path}/.model.onnx.abc.tmp")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as caught:
        atomic_write(path, lambda f: f.write(b"new"))
    assert caught.value.filename == str(path)  # not the temporary file's name
    assert "Permission denied" in caught.value.strerror and "nothing was written" in caught.value.strerror
    assert path.read_bytes() == b"old"


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
def test_a_folder_that_cannot_hold_files_is_one_line_from_the_command_line():
    out = "/proc/resnets-test.onnx"  # a folder of the kernel's, where no file can be made (even by root)
    proc = subprocess.run([sys.executable, "-m", "resnets", "export", "resnet20_cifar10", "--format", "onnx",
                           "--out", out], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {out}: cannot write there" in proc.stderr, proc.stderr
