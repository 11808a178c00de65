"""The training step at its limit: the real loop's step (forward, backward, SGD with momentum) of ResNet-20 and
ResNet-56 at batch 128 on 32-pixel images, in float32 and (where native) bfloat16 autocast, eager NCHW against
channels_last against torch.compile, timed in turns in one process, each as a share of its format's matmul
peak measured in the same run. A running training campaign is paused while it times.

    python bench/train_step.py --out bench/results/train_step/avx512_bf16
    python bench/train_step.py --models resnet50 --batch 64 --size 224      # the ImageNet step (slow)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import resnets
from resnets.benchmark.peaks import matmul_peak
from resnets.machine import machine_info, native_bf16
from resnets.timing import time_interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, campaign_paused, write_result  # noqa: E402

LAYOUTS = ("eager", "channels_last", "compile")


def step_fn(model_name: str, batch: int, size: int, layout: str, bf16: bool) -> tuple[Callable[[], None], float]:
    """One training step of a fresh network in ``layout``, and the seconds its first call took (compilation)."""
    torch.manual_seed(0)
    model = resnets.create_model(model_name, num_classes=10).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if layout != "eager":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if layout == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def train_flops(model_name: str, batch: int, size: int) -> float:
    net = resnets.create_model(model_name, num_classes=10)
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(batch, 3, size, size)).sum().backward()
    return float(counter.get_total_flops())


def measure(model_name: str, batch: int, size: int, repeats: int) -> dict[str, Any]:
    formats = [False] + ([True] if native_bf16() else [])
    peaks = {bf16: matmul_peak(torch.bfloat16 if bf16 else torch.float32) for bf16 in formats}
    flops = train_flops(model_name, batch, size)
    steps, first = {}, {}
    for bf16 in formats:
        for layout in LAYOUTS:
            key = f"{'bf16' if bf16 else 'fp32'} {layout}"
            steps[key], first[key] = step_fn(model_name, batch, size, layout, bf16)
    timings = time_interleaved(steps, repeats)
    rows = {}
    for key, t in timings.items():
        bf16 = key.startswith("bf16")
        rows[key] = {"median_s": round(t.median_s, 4), "images_per_s": round(batch / t.median_s, 1),
                     "peak_share": round(flops / t.median_s / peaks[bf16], 3), "first_call_s": round(first[key], 1)}
    base = "bf16 eager" if native_bf16() else "fp32 eager"  # what the training loop ran before channels_last
    for r in rows.values():
        r["x_eager"] = round(rows[base]["median_s"] / r["median_s"], 2)
    return {"batch": batch, "size": size, "train_gflop_per_step": round(flops / 1e9, 2),
            "peak_gflops": {("bf16" if k else "fp32"): round(v / 1e9, 1) for k, v in peaks.items()}, "steps": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "train_step"))
    args = p.parse_args()
    with campaign_paused() as quiet:
        record = {"machine": machine_info(), **quiet,
                  "command": "python bench/train_step.py " + " ".join(sys.argv[1:]),
                  "models": {m: measure(m, args.batch, args.size, args.repeats) for m in args.models}}
    write_result("train_step", record, args.out)


if __name__ == "__main__":
    main()
