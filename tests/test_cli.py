"""The command line: listing, model info, one-line errors."""
import subprocess
import sys

from resnets.cli import main


def test_list_filters(capsys):
    assert main(["list", "resnet5*"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in out if line] == ["resnet50", "resnet50d", "resnet56"]


def test_info_counts_come_from_the_model(capsys):
    assert main(["info", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "269,722" in out and "64x8x8" in out and "0.041 GMACs" in out
    assert main(["info", "resnet18", "--in-chans", "1", "--num-classes", "10", "--input-size", "32"]) == 0
    assert "11,175,370" in capsys.readouterr().out


def test_unknown_model_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "resnets", "info", "resnt18"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "resnets info: error: unknown model 'resnt18'; did you mean resnet18, resnet152, resnet110?"
