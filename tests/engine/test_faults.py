"""Faults: a process killed while it writes a checkpoint, and resident memory over thousands of steps."""
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.data import (
    AugmentConfig,
    BatchAugment,
    BatchLoader,
    batch_generator,
    load_data,
)
from resnets.cli import main
from resnets.engine.checkpoint import load_training_checkpoint, save_checkpoint
from resnets.engine.ema import ModelEma

SLOW_WRITER = """
import sys, time, torch
from resnets.files import atomic_write
big = {"model": {"w": torch.zeros(4_000_000)}, "config": {"model": "resnet20"}, "classes": ["a"], "epoch": 2}

def write(f):
    data = __import__("io").BytesIO()
    torch.save(big, data)
    raw = data.getvalue()
    for i in range(0, len(raw), 1 << 16):  # slowly, so that the kill lands in the middle
        f.write(raw[i:i + (1 << 16)])
        f.flush()
        if i == 1 << 20:
            print("writing", flush=True)
        time.sleep(0.002)

atomic_write(sys.argv[1], write)
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {"model": "resnet20"}, "classes": ["a"],
                           "in_chans": 1, "mean": [0.5], "std": [0.2], "image_size": 8, "epoch": 1})
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # the new file is half written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_training_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]  # only an ignored temporary remains


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.slow
def test_memory_soak_of_thousands_of_training_steps():
    """The training step (augment, forward, backward, SGD, EMA) at a tiny size, 2,000 times: resident
    memory after warm-up does not grow by more than a few percent."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread has the least overhead
    try:
        _soak(2000)
    finally:
        torch.set_num_threads(threads)


def _soak(steps: int) -> None:
    data = load_data("digits")
    model = resnets.create_model("resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ema = ModelEma(model, 0.99)
    aug = BatchAugment(AugmentConfig(), data.mean, data.std, data.num_classes)
    loader = BatchLoader(data.train, 16, shuffle=True, drop_last=True)
    step, rss = 0, []
    t0 = time.time()
    for epoch in range(100):
        for i, (x, y) in enumerate(loader.batches(epoch)):
            x, y = aug.train(x[:, :, :16, :16], y, batch_generator(0, epoch, i))  # 16x16: small and fast
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(model)
            step += 1
            if step in (300, steps):
                rss.append(_rss_mb())
            if step == steps:
                break
        if step == steps:
            break
    assert step == steps and time.time() - t0 < 300
    assert rss[1] <= rss[0] * 1.05, f"resident memory grew from {rss[0]:.1f} MB to {rss[1]:.1f} MB"


NO_ROOM = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from resnets.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _with_no_room(limit: int, *argv: str) -> subprocess.CompletedProcess:
    """``resnets ARGV`` in a process that cannot write a file past ``limit`` bytes (RLIMIT_FSIZE): a full disk."""
    return subprocess.run([sys.executable, "-c", NO_ROOM, str(limit), *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def _one_line(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("resnets: ")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_a_full_disk_while_exporting_keeps_the_previous_file(digits_resnet20, tmp_path):
    out = tmp_path / "weights.safetensors"
    out.write_bytes(b"the previous export")
    done = _with_no_room(100_000, "export", digits_resnet20, "--format", "safetensors", "--out", out)
    _one_line(done, str(out), "no room to write it", "the previous file is intact", "free some space")
    assert out.read_bytes() == b"the previous export" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_run_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--recipe", "digits", "--epochs", "2", "--out", str(run), "--no-progress", "--no-tensorboard"]

    def stop_after_the_first_epoch(row):
        raise KeyboardInterrupt  # as a user's Ctrl-C: epoch 1's checkpoints are written

    cfg = resnets.make_config("digits", epochs=2, out=str(run), progress=False, tensorboard=False)
    with pytest.raises(KeyboardInterrupt):
        resnets.train(cfg, on_epoch_end=stop_after_the_first_epoch)
    before = (run / "last.pt").read_bytes()
    done = _with_no_room(500_000, *args, "--resume", "auto")  # epoch 2's checkpoint cannot be written
    _one_line(done, "no room to write it", "the previous file is intact", "free some space")
    assert (run / "last.pt").read_bytes() == before and load_training_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert main([*args, "--resume", "auto"]) == 0  # room again: the run goes on from epoch 1
    assert load_training_checkpoint(run / "last.pt")["epoch"] == 2
    assert main([*args[:4], "3", *args[5:], "--resume", "auto"]) == 2  # a changed setting is not dropped silently
    assert "--resume auto continues the run" in capsys.readouterr().err


def test_a_full_disk_while_sharding_leaves_only_whole_shards(tmp_path):
    from tests.conftest import make_image_tree

    tree = make_image_tree(tmp_path / "tree", per_class=30, size=48)
    dest = tmp_path / "shards"
    done = _with_no_room(60_000, "shard", tree, dest, "--shard-size", "1MB", "--val-size", "0.2")
    _one_line(done, str(dest), "no room to write it", "whole shards written so far")
    assert not list(dest.glob("*.tmp"))
