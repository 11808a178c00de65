"""``resnets campaign``: a user's manifest, its state and results beside it, one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time

import torch

from resnets.cli import main
from resnets.engine.campaign import campaign_paused, campaign_processes, paused_seconds


def _manifest(tmp_path, data="digits", epochs=1):
    path = tmp_path / "runs.yaml"
    path.write_text(json.dumps({"runs": [{"name": "r20", "recipe": "digits", "model": "resnet20", "data": data,
                                          "overrides": {"epochs": epochs, "batch_size": 64}}]}))
    return path


def test_a_users_campaign_keeps_its_state_beside_the_manifest(tmp_path, capsys):
    manifest = _manifest(tmp_path, "{digits}")
    args = [str(manifest), "--var", "digits=digits"]
    assert main(["campaign", "run", *args, "--max-steps", "3", "--budget", "5m", "--nice", "0", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (record["run"], record["start_step"], record["steps"]) == ("r20", 0, 3)
    assert (tmp_path / "runs" / "state" / "r20" / "last.pt").is_file()
    assert not (tmp_path / "runs" / "state" / "RUNNING").exists()
    assert main(["campaign", "status", *args, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["run"], row["step"], row["total"], row["done"]) == ("r20", 3, 19, False)
    assert main(["campaign", "run", *args, "--budget", "5m", "--nice", "0", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "runs" / "results" / "r20.json").read_text())
    assert result["iterations"] == 19 and [s["steps"] for s in result["segments"]] == [3, 16]
    assert not (tmp_path / "runs" / "state" / "r20").exists()
    capsys.readouterr()
    assert main(["campaign", "status", *args]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:5] == ["r20", "19", "/", "19", "done"]


def test_status_says_how_a_run_under_way_stands(tmp_path, capsys):
    manifest = _manifest(tmp_path, epochs=2)
    run = ["campaign", "run", str(manifest), "--budget", "5m", "--nice", "0", "--device", "cpu", "--max-steps"]
    assert main([*run, "3"]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", str(manifest)]) == 0
    lines = capsys.readouterr().out.splitlines()  # who runs, then a line a run, then the time left
    assert "epoch" not in lines[1] and lines[-1].startswith("left: 1 run(s), ")  # no epoch has ended yet
    assert main([*run, "22"]) == 0  # past the first epoch's end (19 steps)
    capsys.readouterr()
    assert main(["campaign", "status", str(manifest), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    last = row["last_epoch"]
    assert last["epoch"] == 1 and 0 <= last["train_error"] <= 100 and 0 <= last["val_error"] <= 100
    assert main(["campaign", "status", str(manifest)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(
        f"epoch 1: training error {last['train_error']:.2f}%, validation {last['val_error']:.2f}%")


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    manifest = _manifest(tmp_path, "{digits}")
    assert main(["campaign", "status", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--var digits=PATH" in err
    assert main(["campaign", "pause", str(manifest), "--var", "digits=digits"]) == 2
    assert "no campaign is running" in capsys.readouterr().err
    assert main(["campaign", "run", str(manifest), "--var", "digits=digits", "--budget", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert main(["campaign", "run", str(manifest), "--var", "digits=digits", "--parallel", "0"]) == 2
    assert "1 or more" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["campaign", "run", str(manifest), "--var", "digits=digits", "--device", "cuda"]) == 2
        assert "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written for a refused command


def test_pause_and_resume_stop_and_continue_a_running_campaign(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    state = tmp_path / "runs" / "state"
    state.mkdir(parents=True)
    # a campaign with a parallel run that has a data worker: a grandchild, stopped with the rest
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                              "'-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    try:
        (state / "RUNNING").write_text(f"{child.pid}\n")  # as a running campaign leaves it
        deadline = time.monotonic() + 10
        while len(campaign_processes(state)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = campaign_processes(state)[1]
        assert main(["campaign", "pause", str(manifest)]) == 0
        assert f"campaign process {child.pid} paused" in capsys.readouterr().out
        assert _reaches(child.pid, "T") and _reaches(grandchild, "T")  # stopped, the worker too
        time.sleep(0.2)
        assert main(["campaign", "resume", str(manifest)]) == 0
        assert _reaches(child.pid, "SR") and paused_seconds(state) >= 0.2
        with campaign_paused(state) as quiet:  # what benchmarks wrap their timing in
            assert quiet == {"campaign_paused": True, "campaign_pid": child.pid} and _reaches(child.pid, "T")
        assert _reaches(child.pid, "SR")
        assert _reaches(grandchild, "SR")
    finally:
        for pid in campaign_processes(state)[::-1]:
            os.kill(pid, signal.SIGKILL)
        child.wait()


def _reaches(pid: int, states: str, timeout: float = 10.0) -> bool:
    """Whether the process gets into one of ``states`` (its /proc state letter) within ``timeout`` seconds:
    a signal is delivered asynchronously."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in states:
                return True
        time.sleep(0.01)
    return False
