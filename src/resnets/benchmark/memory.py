"""Training memory: activations saved for the backward pass and the peak resident memory of one step, with and
without gradient checkpointing, measured in a fresh process (on CUDA: the caching allocator's peak)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..models import create_classifier
from ..timing import synced, time_interleaved
from .speed import training_setup


@dataclass
class MemoryRow:
    model: str
    input_size: int
    batch: int
    mode: str  # "naive" (float32, NCHW) or "bf16" (bfloat16 autocast, channels_last: the training default)
    checkpointed_stages: int  # 0: no gradient checkpointing
    activation_mb_per_image: float  # tensors saved for the backward pass (unique storages)
    peak_rss_mb_per_image: float  # peak resident memory added by one training step, in a fresh process
    step_s: float
    time_ratio: float  # step time / step time without checkpointing


_MEMORY_CHILD = """
import sys, torch
from resnets.benchmark.memory import checkpointed_step

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

step, warm = checkpointed_step(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), mode=sys.argv[5])
warm()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size (VmHWM) to the current one
before = kib("VmRSS:")
step()
print((kib("VmHWM:") - before) / 1024)
"""


def checkpointed_step(name: str, size: int, batch: int, stages: int, device: torch.device | str = "cpu",
                      mode: str = "naive") -> tuple[Callable[[], None], Callable[[], None]]:
    """One training step (forward, loss, backward) of ``name`` with its stem and first ``stages`` stages
    checkpointed, and a warm-up (a no-grad forward: allocations and kernels that a step would set up)."""
    model, x, forward = training_setup(name, size, batch, mode, device, stages)
    y = torch.randint(0, model.num_classes, (batch,), device=device)

    def step() -> None:
        F.cross_entropy(forward(x), y).backward()
        model.zero_grad(set_to_none=True)

    def warm() -> None:
        with torch.no_grad():
            forward(x[:1])

    return synced(step, device), warm


def saved_activation_bytes(name: str, size: int, batch: int, stages: int, mode: str = "naive") -> int:
    """Bytes of the activations that autograd keeps for the backward pass of a ``batch``: what a forward pass
    saves (every storage once) at twice the batch less what it saves at the batch, so that what does not
    grow with the batch (the weights, autocast's bfloat16 copies of them) drops out."""

    def saved(n: int) -> int:
        _, x, forward = training_setup(name, size, n, mode, "cpu", stages)
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(x)
        return sum(storages.values())

    return saved(2 * batch) - saved(batch)


def _cuda_step_memory(name: str, size: int, batch: int, stages: int, mode: str) -> float:
    """Peak GPU memory (MiB) that one training step adds."""
    step, _ = checkpointed_step(name, size, batch, stages, "cuda", mode)
    step()  # cuDNN's first-call workspaces and algorithm search out of the measurement
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def bench_memory(name: str, size: int, batch: int, device: torch.device | str = "cpu", repeats: int = 7,
                 mode: str = "naive") -> list[MemoryRow]:
    """Activation memory and step time without gradient checkpointing and with it on the stem and the
    first 1, 2, ... stages; and the peak memory of a step: resident memory in a fresh process, or the GPU's
    allocator. The step times of all the settings are taken in rotating turns in one process."""
    counts = range(create_classifier(name).num_stages + 1)
    saved, peak = [], []
    for stages in counts:
        saved.append(saved_activation_bytes(name, size, batch, stages, mode))
        if torch.device(device).type == "cuda":
            peak.append(_cuda_step_memory(name, size, batch, stages, mode))
        else:
            peak.append(float(subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, name, str(size), str(batch), str(stages), mode],
                capture_output=True, text=True, check=True).stdout))
    timings = time_interleaved({k: checkpointed_step(name, size, batch, k, device, mode)[0] for k in counts},
                               repeats, warmup=1)
    base = timings[0].median_s
    return [MemoryRow(name, size, batch, mode, k, saved[k] / 2**20 / batch, peak[k] / batch, timings[k].median_s,
                      timings[k].median_s / base) for k in counts]
