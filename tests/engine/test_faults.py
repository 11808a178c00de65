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
