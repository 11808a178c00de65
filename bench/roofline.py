"""What bounds CIFAR ResNet-20 training (batch 128, float32) on this CPU: how much of a step the convolutions
take, how fast they run against the machine's float32 matmul peak, the speedups over the naive baseline
that even perfect kernels would allow, and whether Winograd's F(2x2, 3x3) could cut the convolutions' time.

    python bench/roofline.py --out bench/results/cpu-avx2     # writes roofline.json there

Issue #4 asks for 2x the naive baseline. Native bfloat16 halves the step's bytes and doubles its arithmetic
rate; whether float32 alone can get there on a CPU is what this script measures.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from common import RESULTS, write_result
from resnets.benchmark.peaks import cpu_matmuls
from resnets.benchmark.speed import train_step
from resnets.timing import time_interleaved
from resnets.machine import machine_info

BATCH, SIZE = 128, 32
N = 2048  # the peak's matrix size
CONV_FORWARD = {"aten::mkldnn_convolution", "aten::_convolution", "aten::thnn_conv2d"}
CONV_BACKWARD = {"aten::convolution_backward"}


def conv_flops(step: Callable[[], None]) -> dict[str, float]:
    """FLOPs of one training step's convolutions: forward and backward."""
    with FlopCounterMode(display=False) as counter:
        step()
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return {"forward": ops.get("aten.convolution", 0), "backward": ops.get("aten.convolution_backward", 0)}


def conv_seconds(step: Callable[[], None], steps: int = 10) -> dict[str, float]:
    """Seconds per step in the convolutions' forward and backward kernels, and in the whole step (profiled)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    self_s = {e.key: e.self_cpu_time_total / 1e6 / steps for e in events}
    return {"conv_forward": sum(self_s.get(k, 0.0) for k in CONV_FORWARD),
            "conv_backward": sum(self_s.get(k, 0.0) for k in CONV_BACKWARD),
            "total": sum(self_s.values())}


def winograd_gemm_vs_direct(width: int, size: int, repeats: int) -> dict[str, float]:
    """One 3x3 convolution of a stage (``width`` channels, ``size`` pixels square, channels_last): the direct
    convolution's forward time against the batched matrix products alone of Winograd's F(2x2, 3x3), 16 products
    of (images x tiles, width) by (width, width). The input and output transforms are left out, so this is a
    lower bound on Winograd's time: where it is not below the direct time, Winograd cannot win."""
    x = torch.randn(BATCH, width, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(width, width, 3, 3).contiguous(memory_format=torch.channels_last)
    tiles = torch.randn(16, BATCH * (size // 2) ** 2, width)
    u = torch.randn(16, width, width)
    with torch.no_grad():
        t = time_interleaved({"direct": lambda: torch.nn.functional.conv2d(x, w, padding=1),
                              "winograd_gemm": lambda: torch.bmm(tiles, u)}, repeats)
    flops = 2 * BATCH * size * size * width * width * 9
    return {"width": width, "size": size, "direct_ms": t["direct"].median_s * 1e3,
            "direct_gflops": flops / t["direct"].median_s / 1e9, "winograd_gemm_ms": t["winograd_gemm"].median_s * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.manual_seed(0)
    steps = {mode: train_step("resnet20", SIZE, BATCH, mode, "cpu") for mode in ("naive", "channels_last")}
    matmuls = cpu_matmuls(torch.float32, N)
    # the peak in the same rotation as the steps: this machine's speed drifts by tens of percent within minutes
    timed = time_interleaved({**steps, **matmuls}, args.repeats)
    peak = 2 * N**3 / min(timed[k].median_s for k in matmuls)
    naive_s = timed["naive"].median_s
    flops = conv_flops(steps["channels_last"])
    # the profiler's split of a channels_last step, scaled to its unprofiled median
    split = [conv_seconds(steps["channels_last"], 5) for _ in range(3)]
    scale = timed["channels_last"].median_s / statistics.median(s["total"] for s in split)
    fwd_s = statistics.median(s["conv_forward"] for s in split) * scale
    bwd_s = statistics.median(s["conv_backward"] for s in split) * scale
    step_s = timed["channels_last"].median_s
    winograd = [winograd_gemm_vs_direct(w, s, args.repeats) for w, s in ((16, 32), (32, 16), (64, 8))]
    total = flops["forward"] + flops["backward"]
    record = {
        "machine": machine_info(),
        "model": "resnet20", "batch": BATCH, "input_size": SIZE, "dtype": "float32",
        "fp32_matmul_peak_gflops": peak / 1e9,
        "naive_step_s": naive_s, "channels_last_step_s": step_s,
        "channels_last_speedup": naive_s / step_s,
        "conv_gflop": total / 1e9, "conv_forward_gflop": flops["forward"] / 1e9,
        "conv_share_of_step": (fwd_s + bwd_s) / step_s,
        "conv_forward_peak_fraction": flops["forward"] / fwd_s / peak,
        "conv_backward_peak_fraction": flops["backward"] / bwd_s / peak,
        # speedups over the naive step if the convolutions ran at the peak, the rest as now / taking no time
        "bound_convs_at_peak": naive_s / (step_s - fwd_s - bwd_s + total / peak),
        "bound_convs_at_peak_rest_free": naive_s / (total / peak),
        "winograd": winograd,
    }
    write_result("roofline", record, args.out)


if __name__ == "__main__":
    main()
