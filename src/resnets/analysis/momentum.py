"""Momentum ResNets measured: the peak memory and time of one training step against depth, for a ResNet, the
same with gradient checkpointing, and a Momentum ResNet with its invertible backward; each step in a fresh
process, so that its peak resident memory is its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..files import atomic_write
from ..models import create_classifier
from ..models.resnet import StagedNet
from ..timing import time_interleaved

MODES = ("resnet", "checkpointed", "momentum")


@dataclass(frozen=True)
class Scale:
    """The depths whose memory and time per step are measured, at this batch size."""

    depths: tuple[int, ...]
    batch: int


QUICK = Scale(depths=(20, 56, 110), batch=32)
FULL = Scale(depths=(20, 56, 110, 218, 434), batch=64)

_CHILD = """
import sys
from resnets.analysis.momentum import training_step

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

step = training_step(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
step()  # the first step allocates what every step reuses (weights' gradients, kernels' workspaces)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size (VmHWM) to the current one
before = kib("VmRSS:")
step()
print((kib("VmHWM:") - before) / 1024)
"""


def network(mode: str, depth: int) -> StagedNet:
    """A CIFAR ResNet of ``depth`` (6n+2; option A shortcuts) as ``mode`` trains it."""
    n = (depth - 2) // 6
    model = create_classifier("resnet20", layers=(n, n, n), momentum=0.9 if mode == "momentum" else None)
    model.set_grad_checkpointing(mode == "checkpointed")
    return model.train()


def training_step(mode: str, depth: int, batch: int) -> Callable[[], None]:
    """One float32 training step (forward, loss, backward) of ``network(mode, depth)`` on a fixed batch."""
    torch.manual_seed(0)
    model = network(mode, depth)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=False)

    return step


# Every buffer over 64 KiB gets its own mapping and goes back to the system when freed: without this, glibc's
# allocator keeps the first step's freed activations and raises its mapping threshold as it likes, so that the
# second step's resident peak says little about what the step holds.
_EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def peak_mb(mode: str, depth: int, batch: int) -> float:
    """The resident memory (MiB) that one training step adds at its peak, measured in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(depth), str(batch)], capture_output=True,
                          text=True, check=True, env={**os.environ, **_EXACT_MALLOC})
    return round(float(done.stdout), 1)


def memory_and_time(depths: tuple[int, ...], batch: int, repeats: int = 3) -> dict[str, Any]:
    """Peak memory and median step time of each mode at each depth (the modes timed in turns)."""
    peaks: dict[str, list[float]] = {m: [] for m in MODES}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    for depth in depths:
        for mode in MODES:
            peaks[mode].append(peak_mb(mode, depth, batch))
        timings = time_interleaved({m: training_step(m, depth, batch) for m in MODES}, repeats, warmup=1)
        for mode in MODES:
            seconds[mode].append(round(timings[mode].median_s, 4))
    return {"depths": list(depths), "batch": batch, "dtype": "float32", "peak_mb": peaks, "seconds_per_step": seconds}


def analyse_momentum(out: Path, results: list[dict[str, Any]], quick: bool = False) -> list[Path]:
    """After ``resnets experiment momentum`` trained both networks: memory and time against depth,
    ``momentum.json`` (with the trained networks' errors) and ``momentum.png``."""
    scale = QUICK if quick else FULL
    report = memory_and_time(scale.depths, scale.batch)
    report["accuracy"] = [{k: r.get(k) for k in ("label", "seeds", "test_error", "test_error_std", "val_error",
                                                  "val_error_std", "train_error")} for r in results]
    return write_report(out, report)


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """``momentum.json`` and its figure, ``momentum.png``: memory and time of a step against depth."""
    from ..plots import plt, save_figure

    atomic_write(out / "momentum.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = {"resnet": "ResNet (backprop)", "checkpointed": "ResNet, gradient checkpointing",
              "momentum": "Momentum ResNet, invertible backward"}
    for mode in MODES:
        ax1.plot(report["depths"], report["peak_mb"][mode], "o-", label=labels[mode])
        ax2.plot(report["depths"], report["seconds_per_step"][mode], "o-", label=labels[mode])
    ax1.set(xlabel="layers", ylabel=f"peak memory of a step (MiB, batch {report['batch']})")
    ax2.set(xlabel="layers", ylabel="seconds per training step")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return [save_figure(fig, out / "momentum.png")]
