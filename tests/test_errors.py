"""One-line reasons (``resnets.errors``) from the libraries' multi-line errors, on the real exceptions."""
import io
import tarfile

import pytest
import yaml

from resnets.errors import archive_problem, yaml_problem


def _tar_error(data: bytes) -> tarfile.TarError:
    with pytest.raises(tarfile.TarError) as caught:
        tarfile.open(fileobj=io.BytesIO(data))
    return caught.value


def test_an_archive_that_no_compression_opens_is_one_line():
    assert "\n" in str(_tar_error(b"hello"))  # tarfile: a line per compression it tried
    assert archive_problem(_tar_error(b"hello")) == "not a tar archive (plain, gzip, bzip2 or xz), or a damaged one"
    assert archive_problem(OSError("disk on fire\nsecond line")) == "disk on fire"
    assert archive_problem(EOFError()) == "EOFError"


def test_a_yaml_syntax_error_is_its_problem_and_place():
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load("a: 1\nb: [2\n")
    assert "\n" in str(caught.value)
    assert yaml_problem(caught.value) == "expected ',' or ']', but got '<stream end>' (line 3, column 1)"
    assert yaml_problem(ValueError("plain")) == "plain"
