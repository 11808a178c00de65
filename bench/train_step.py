"""The training step at its limit: the real loop's step (forward, backward, SGD with momentum) of ResNet-20 and
ResNet-56 at batch 128 on 32-pixel images, in float32 and (where native) bfloat16 autocast, eager NCHW against
channels_last against torch.compile, timed in turns in one process, each as a share of its format's matmul
peak measured in the same run. A running training campaign is paused while it times.

Beside the steps, each convolution of the step is timed alone at its shape in its three parts (the forward
pass, the gradient of its input, the gradient of its weights), as oneDNN runs them: their sum is about what
a step would take if everything between the convolutions (batch norm, activations, pooling, additions, the
optimiser) were free, and each part's share of the peak says which kernel falls short of it.

    python bench/train_step.py --out bench/results/train_step/avx512_bf16
    python bench/train_step.py --models resnet50 --batch 64 --size 224      # the ImageNet step (slow)
    python bench/train_step.py --models fastplain8 --batch 2000 --formats bf16 --layouts channels_last
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import resnets
from resnets.benchmark.peaks import matmul_peak
from resnets.machine import machine_info, native_bf16
from resnets.timing import time_interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, campaign_paused, layer_shapes, write_result  # noqa: E402

LAYOUTS = ("eager", "channels_last", "compile")
FORMATS = {"fp32": torch.float32, "bf16": torch.bfloat16}
PARTS = ("forward", "input_grad", "weight_grad")


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


def conv_parts(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor | None = None) -> dict[str, Callable[[], Any]]:
    """The three kernels a training step runs for ``conv`` on ``x`` (its weights cast to ``x``'s format, in
    ``x``'s layout), given the gradient ``g`` of its output (drawn at random if None)."""
    w = conv.weight.detach().to(x.dtype).contiguous(memory_format=torch.channels_last)
    geometry = (conv.stride, conv.padding, conv.dilation)
    if g is None:
        with torch.no_grad():
            g = torch.randn_like(F.conv2d(x, w, None, *geometry, conv.groups))

    def backward(mask: list[bool]) -> tuple[torch.Tensor, ...]:
        return torch.ops.aten.convolution_backward(g, x, w, None, *geometry, False, [0, 0], conv.groups, mask)

    return {"forward": lambda: F.conv2d(x, w, None, *geometry, conv.groups),
            "input_grad": lambda: backward([True, False, False])[0],
            "weight_grad": lambda: backward([False, True, False])[1]}


def convolutions(model_name: str, batch: int, size: int, dtype: torch.dtype, peak: float, repeats: int
                 ) -> dict[str, Any]:
    """Every convolution of one training step timed alone in its parts (medians of ``repeats``, weighted by how
    often each shape runs): seconds and share of the ``peak`` per part, and their sum."""
    torch.manual_seed(0)
    net = resnets.create_model(model_name, num_classes=10).train()
    seconds, flops = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0.0)
    for (conv, shape), layer in layer_shapes(net, torch.randn(batch, 3, size, size), grad=True).items():
        if not isinstance(conv, nn.Conv2d):
            continue
        needed = {"forward": True, "input_grad": layer.input_grad, "weight_grad": layer.weight_grad}
        x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
        fns = {k: fn for k, fn in conv_parts(conv, x).items() if needed[k]}
        for part, t in time_interleaved(fns, repeats).items():
            seconds[part] += layer.count * t.median_s
            flops[part] += layer.count * layer.flops
    parts = {k: {"seconds": round(seconds[k], 4), "gflop": round(flops[k] / 1e9, 3),
                 "peak_share": round(flops[k] / seconds[k] / peak, 3)} for k in PARTS if seconds[k]}
    total_s, total_flops = sum(seconds.values()), sum(flops.values())
    return {"seconds": round(total_s, 4), "peak_share": round(total_flops / total_s / peak, 3), "parts": parts}


def measure(model_name: str, batch: int, size: int, repeats: int, formats: list[str], layouts: list[str]
            ) -> dict[str, Any]:
    peaks = {f: matmul_peak(FORMATS[f]) for f in formats}
    flops = train_flops(model_name, batch, size)
    steps, first = {}, {}
    for f in formats:
        for layout in layouts:
            key = f"{f} {layout}"
            steps[key], first[key] = step_fn(model_name, batch, size, layout, f == "bf16")
    timings = time_interleaved(steps, repeats)
    rows = {}
    for key, t in timings.items():
        f = key.split()[0]
        rows[key] = {"median_s": round(t.median_s, 4), "images_per_s": round(batch / t.median_s, 1),
                     "peak_share": round(flops / t.median_s / peaks[f], 3), "first_call_s": round(first[key], 1)}
    base = "bf16 eager" if native_bf16() else "fp32 eager"  # what the training loop ran before channels_last
    for r in rows.values():
        if base in rows:
            r["x_eager"] = round(rows[base]["median_s"] / r["median_s"], 2)
    convs = {}
    for f in formats:
        convs[f] = convolutions(model_name, batch, size, FORMATS[f], peaks[f], repeats)
        fastest = min(r["median_s"] for k, r in rows.items() if k.startswith(f))
        convs[f]["share_of_fastest_step"] = round(convs[f]["seconds"] / fastest, 3)
    return {"batch": batch, "size": size, "train_gflop_per_step": round(flops / 1e9, 2),
            "peak_gflops": {f: round(v / 1e9, 1) for f, v in peaks.items()}, "steps": rows,
            "convolutions": convs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS),
                   help="number formats (bf16 only where the CPU has it natively)")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--out", default=str(RESULTS / "train_step"))
    args = p.parse_args()
    formats = [f for f in args.formats if f == "fp32" or native_bf16()]
    if not formats:
        p.error("bf16 is not native on this CPU (its autocast would run a slow reference loop): add --formats fp32")
    with campaign_paused() as quiet:
        record = {"machine": machine_info(), **quiet,
                  "command": "python bench/train_step.py " + " ".join(sys.argv[1:]),
                  "models": {m: measure(m, args.batch, args.size, args.repeats, formats, args.layouts)
                             for m in args.models}}
    write_result("train_step", record, args.out)


if __name__ == "__main__":
    main()
