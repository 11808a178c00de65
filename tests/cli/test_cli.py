"""The command line: listing, model info, one-line errors."""
import platform
import pytest
import subprocess
import sys
from pathlib import Path

from resnets.cli import build_parser, main


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


def test_info_describes_a_checkpoint_and_its_network(capsys, tree_run):
    """``resnets info`` takes a checkpoint too: what it is, what it predicts, how it reads images, its stages."""
    _, best, _ = tree_run
    assert main(["info", str(best)]) == 0
    out = capsys.readouterr().out
    assert "a resnets training checkpoint" in out and "architecture  resnet20" in out and "3 classes (cat, dog, fox" \
        in out and "recipe        saved with it" in out and "resnet20 at 32x32" in out and "269," in out
    assert main(["info", "resnet20_cifar10"]) == 0
    out = capsys.readouterr().out
    assert "recipe        cifar10-resnet-cosine (by name" in out and "iterations    64000" in out


def test_unknown_model_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "resnets", "info", "resnt18"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("resnets info: error: unknown model 'resnt18'; did you mean resnet18, resnet152, "
                                   "resnet110?")


def test_train_options_explain_themselves(capsys):
    """Each option's help is its config field's help text and default; an unset option leaves the recipe's value."""
    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "--val-size VAL_SIZE validation split held out of train (fraction or count)" in text
    assert "--epochs EPOCHS training epochs (may be fractional) (default: 30)" in text
    assert "--lookahead-every LOOKAHEAD_EVERY airbench's lookahead" in text
    args = build_parser().parse_args(["train", "--recipe", "cifar10-fast", "--lr", "0.5"])
    assert args.lr == 0.5 and not hasattr(args, "epochs")


def _run(*args, cwd=None, env=None):
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "resnets", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env)


def _one_clean_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert "Traceback" not in proc.stderr
    assert any(all(f in line for f in fragments) for line in lines), proc.stderr
    assert sum("error:" in line for line in lines) == 1


def test_train_bad_inputs_are_one_line_each(tmp_path):
    _one_clean_error_line(_run("train", "--data", str(tmp_path / "missing")), "data not found")
    _one_clean_error_line(_run("train", "--lr", "100"), "setting 'lr' must be in (0, 10], got 100.0")
    _one_clean_error_line(_run("train", "--batch-size", "0"), "setting 'batch_size' must be in")
    _one_clean_error_line(_run("train", "--nproc", "0"), "--nproc must be >= 1")
    _one_clean_error_line(_run("train", "--model", "resnet21"), "unknown model 'resnet21'", "did you mean")
    _one_clean_error_line(_run("train", "--recipe", "cifar10-resnet56-papr"), "did you mean cifar10-resnet56-paper")
    _one_clean_error_line(_run("train", "--model-arg", "drop_path_rate=[1"), "--model-arg",
                          "the value of drop_path_rate is not valid YAML", "(line 1, column 3)")
    (tmp_path / "ten.yaml").write_text("epochs: ten\n")
    _one_clean_error_line(_run("train", "--recipe", str(tmp_path / "ten.yaml")), "setting 'epochs' must be a number")
    (tmp_path / "empty").mkdir()
    _one_clean_error_line(_run("train", "--data", str(tmp_path / "empty")), "no class folders")
    _one_clean_error_line(_run("train", "--data", "cifar10", "--data-root", str(tmp_path)), "cifar10 not found")
    (tmp_path / "file").write_text("kept")
    _one_clean_error_line(_run("train", "--out", str(tmp_path / "file")), "output folder", "is a file")
    # the file system refusing (here: a folder inside a file) is one line too, naming the path
    _one_clean_error_line(_run("train", "--epochs", "1", "--subset", "64", "--out", str(tmp_path / "file" / "run")),
                          str(tmp_path / "file" / "run"), "Not a directory")
    assert (tmp_path / "file").read_text() == "kept"


def test_a_bf16_only_mode_on_an_avx2_cpu_is_one_line():
    # an x86 CPU without native bfloat16, as oneDNN's cap makes this one (where OpenVINO's bf16 build fails)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN's instruction-set cap is an x86 setting")
    fixture = Path(__file__).parents[1] / "fixtures" / "cifar10-test-200"
    proc = _run("eval", "resnet20_cifar10", "--data", str(fixture), "--mode", "openvino_bf16",
                env={"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    _one_clean_error_line(proc, "openvino_bf16 mode needs a CPU with native bfloat16", "avx2", "openvino")


def test_predict_is_an_error_only_where_no_input_could_be_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    proc = _run("predict", "resnet20_cifar10", str(tmp_path / "notes.txt"))
    _one_clean_error_line(proc, "none of the 1 input(s) could be read as an image", ".png")
    assert "skipped" in proc.stderr and "notes.txt" in proc.stderr and not proc.stdout
    bird = next((Path(__file__).parents[1] / "fixtures" / "cifar10-test-200" / "bird").iterdir())
    proc = _run("predict", "resnet20_cifar10", str(tmp_path / "notes.txt"), str(bird))
    assert proc.returncode == 0 and proc.stdout.startswith(f"{bird}: ") and "skipped" in proc.stderr


@pytest.mark.slow
def test_train_eval_predict_from_the_command_line(tmp_path, image_tree):
    out = tmp_path / "run"
    env = {"RESNETS_CACHE": str(tmp_path / "cache")}
    proc = _run("train", "--data", str(image_tree), "--val-size", "3", "--epochs", "1", "--batch-size", "8",
                "--out", str(out), "--no-progress", "--model-arg", "drop_path_rate=0.05", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "best epoch 1" in proc.stdout and (out / "best.pt").is_file()
    proc = _run("eval", str(out / "best.pt"), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["n"] == 24
    proc = _run("eval", str(out / "best.pt"), "--compare-modes", "fused", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["mode"] for r in json.loads(proc.stdout)] == ["eager", "fused"]
    (image_tree / "test" / "cat" / "broken.jpg").write_bytes(b"xx")
    proc = _run("predict", str(out / "best.pt"), str(image_tree / "test" / "cat"), "--topk", "2", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 8 and len(rows[0]["top"]) == 2 and "broken.jpg" in proc.stderr
    _one_clean_error_line(_run("predict", str(out / "best.pt"), str(image_tree / "test" / "cat"), "--strict",
                               env=env), "broken.jpg")
    # a checkpoint for another architecture, a corrupt checkpoint, a file that is not an image
    torch_file = tmp_path / "weights.pth"
    import torch

    torch.save(resnets_state(), torch_file)
    _one_clean_error_line(_run("eval", str(torch_file)), "not a resnets training checkpoint")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    _one_clean_error_line(_run("predict", str(tmp_path / "bad.pt"), str(image_tree)), "cannot read checkpoint")
    _one_clean_error_line(_run("predict", str(out / "best.pt"), str(tmp_path / "nope.jpg")), "no such file")
    # nothing already written was lost
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


def resnets_state():
    import resnets

    return resnets.create_model("resnet20").state_dict()


@pytest.mark.slow
def test_bench_quick_writes_json(tmp_path, capsys):
    import json

    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--no-compile", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    modes = [r["mode"] for r in report["inference"]]
    assert modes[0] == "eager" and "fused" in modes and all(r["agrees"] for r in report["inference"])
    from resnets.machine import native_bf16

    memory_modes = ["naive", "bf16"] if native_bf16("cpu") else ["naive"]
    assert [(r["mode"], r["checkpointed_stages"]) for r in report["memory"]] == [
        (mode, k) for mode in memory_modes for k in range(4)]
    for rows in (report["memory"][i:i + 4] for i in range(0, len(report["memory"]), 4)):
        assert rows[2]["activation_mb_per_image"] < 0.5 * rows[0]["activation_mb_per_image"]
    assert "matmul peak" in capsys.readouterr().out


def test_every_command_explains_itself(capsys):
    """``--help`` of the program and of every subcommand prints (a stray % in a help text breaks argparse)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for argv in [[], *([name] for name in commands)]:
        with pytest.raises(SystemExit) as done:
            main([*argv, "--help"])
        assert done.value.code == 0, argv
    assert "compare" in capsys.readouterr().out


def test_a_closed_pipe_ends_the_command_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `resnets list | head -0` does, before the list is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""  # no traceback, no error line: the reader chose to stop


def test_a_broken_pipe_elsewhere_is_an_error_line(monkeypatch, capsys):
    import resnets.cli as cli

    def worker_gone(args):
        raise BrokenPipeError(32, "Broken pipe")  # a worker's or a socket's pipe, not standard output

    monkeypatch.setattr(cli, "_cmd_list", worker_gone)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err == "resnets list: error: Broken pipe\n"


def test_an_error_that_quotes_a_library_over_lines_is_printed_on_one(monkeypatch, capsys):
    import resnets.cli as cli
    from resnets import DataError

    def quoting(args):
        raise DataError("cannot read x: the library said\n  - first reason\n  - second reason\n")

    monkeypatch.setattr(cli, "_cmd_list", quoting)
    assert cli.main(["list"]) == 2
    expected = "resnets list: error: cannot read x: the library said - first reason - second reason\n"
    assert capsys.readouterr().err == expected
