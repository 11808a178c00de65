"""Training on streamed data: exact mid-epoch resume, the command line over HTTP, failures that end cleanly,
and two torchrun "nodes" on 127.0.0.1 reading shards over HTTP."""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import resnets
from conftest import make_image_tree
from resnets.data.make_shards import make_shards
from resnets.engine.checkpoint import load_training_checkpoint

FAST = dict(model="resnet20", epochs=2, batch_size=8, lr=0.05, precision="fp32", channels_last=False, crop_size=28,
            rrc_scale=[0.35, 1.0], image_size=32, progress=False, tensorboard=False, eval_test=False, workers=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamtrain")
    tree = make_image_tree(root / "tree", per_class=16, size=32, fmt="jpg")
    make_shards(tree, root / "shards", shard_size=10_000)
    return root / "shards"


def _weights(path):
    return load_training_checkpoint(path)["model"]


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(shards, tmp_path, monkeypatch):
    whole = resnets.train(resnets.make_config(None, data=str(shards), out=str(tmp_path / "whole"), **FAST))
    steps = whole.history[-1]["step"]
    assert steps == 2 * (43 // 8)  # 43 training images (48 less 10% for validation), batch 8

    cfg = resnets.make_config(None, data=str(shards), out=str(tmp_path / "cut"), checkpoint_every=2, **FAST)
    train_module = sys.modules["resnets.engine.train"]

    calls = {"n": 0}
    real = train_module.set_lr

    def stop_at_step_8(*args):  # dies in the second epoch, after the checkpoint of step 6
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(train_module, "set_lr", stop_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        resnets.train(cfg)
    monkeypatch.setattr(train_module, "set_lr", real)
    stopped = load_training_checkpoint(tmp_path / "cut" / "last.pt")
    assert (stopped["epoch"], stopped["step"]) == (1, 6) and stopped["epoch_totals"][3] == 8  # 1 step of epoch 2
    resumed = resnets.train(cfg, resume=tmp_path / "cut" / "last.pt")
    a, b = _weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-6)


def _run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "resnets", *args], capture_output=True, text=True, timeout=600,
                          env=env, **kw)


def _processes_with(marker: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def test_train_over_http_with_workers(shards, http_root, tmp_path):
    url = http_root(shards)
    done = _run(["train", "--data", url, "--epochs", "1", "--batch-size", "8", "--workers", "2", "--crop-size", "28",
                 "--image-size", "32", "--rrc-scale", "0.35", "1", "--out", str(tmp_path / "run"), "--no-progress",
                 "--no-tensorboard"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test top-1" in done.stdout and "process 0 of 1: 5 batches of 8" in done.stderr
    report = (tmp_path / "run" / "report.json").read_text()
    assert "train shards (43 images)" in report
    evaluated = _run(["eval", str(tmp_path / "run" / "best.pt"), "--json", "--mode", "fused"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert '"n": 48' in evaluated.stdout  # the 48 test images, streamed from the server


def test_an_unreachable_url_ends_the_command_in_one_line():
    done = _run(["train", "--data", "http://127.0.0.1:9/shards", "--epochs", "1"])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("check the address and that the server is reachable")


def test_a_damaged_shard_ends_the_run_in_one_line_and_leaves_no_workers(shards, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    for victim in bad.glob("train-*.tar"):  # whichever is read first
        data = bytearray(victim.read_bytes())
        data[900] ^= 0xFF
        victim.write_bytes(bytes(data))
    out = tmp_path / "marker-run-bad-shard"
    done = _run(["train", "--data", str(bad), "--epochs", "1", "--batch-size", "8", "--workers", "2",
                 "--crop-size", "28", "--out", str(out), "--no-progress", "--no-tensorboard"])
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and re.search(r"shard train-\d+\.tar does not match the sha256", lines[0])
    assert "Traceback" not in done.stderr
    time.sleep(0.5)
    assert _processes_with(str(out)) == []  # no worker outlived the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_read_disjoint_parts_of_shards_over_http(shards, http_root, tmp_path):
    url, port = http_root(shards), _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "-m", "resnets", "train", "--data", url,
           "--epochs", "1", "--batch-size", "8", "--workers", "1", "--crop-size", "28", "--image-size", "32",
           "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    logs = outputs[0][1] + outputs[1][1]
    # 43 images, 2 processes of 4 images a step: 21 each, 5 whole batches each
    assert "process 0 of 2: 5 batches of 4" in logs and "process 1 of 2: 5 batches of 4" in logs
    assert sum(o[0].count("best epoch") for o in outputs) == 1  # one report, from rank 0


def test_train_small_test_large_evaluates_at_the_test_size(shards, tmp_path):
    """FixRes (train at a lower resolution than the test): streamed evaluation images are decoded at the test
    size, and the checkpoint carries it to eval and predict."""
    cfg = resnets.make_config(None, **{**FAST, "crop_size": 24, "test_size": 32, "test_crop_pct": 1.0, "epochs": 1,
                                       "data": str(shards), "out": str(tmp_path / "run")})
    from resnets.engine.batches import prepare_data

    data = prepare_data(cfg)
    assert data.streamed and (data.val.image_size, data.val.crop) == (32, 32)
    result = resnets.train(cfg)
    ckpt = load_training_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["test_size"] == 32 and ckpt["test_crop_pct"] == 1.0 and result.best_epoch == 1
    predictor = resnets.Predictor(tmp_path / "run" / "best.pt", mode="fused")
    seen = []
    real = predictor.forward
    predictor.forward = lambda x: seen.append(tuple(x.shape[-2:])) or real(x)
    predictor.predict_tensor(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert seen == [(32, 32)]  # the network sees test-size images, not 24-pixel crops
