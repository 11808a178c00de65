"""How close to the matmul peak any inference mode built on PyTorch's convolutions can come: ResNet-50's
convolutions and classifier, each timed alone at the exact shapes a forward pass gives them (batch norm folded,
channels_last, in each number format), against the whole network in the modes that run those kernels.

The sum of the layers' times is about the time a mode would take if everything between the convolutions
(additions, activations, pooling, layout changes) were free: its share of the matmul peak is how fast the
convolution kernels themselves run at this network's shapes, the rough ceiling for the number format. Rough:
a layer called alone allocates its output and may reorder its weights on every call, which a compiled network
does once, so a compiled network can come out a little above it.

    python bench/conv_ceiling.py --out bench/results/ceiling   # writes ceiling.json there
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from common import RESULTS, layer_shapes, write_result
from resnets.benchmark.peaks import matmul_peak
from resnets.inference import fuse_bn, prepare_inference
from resnets.machine import machine_info, native_bf16
from resnets.models import create_model
from resnets.timing import time_calls, time_interleaved

FORMATS = {"float32": (torch.float32, "fused", "compile"), "bfloat16": (torch.bfloat16, "bf16", "compile_bf16")}


def layers_alone(net: nn.Module, x: torch.Tensor, dtype: torch.dtype, repeats: int) -> dict:
    """Each layer timed alone (median of ``repeats``) at its shape; the sum weighted by occurrences."""
    rows, total_s, total_flops = [], 0.0, 0.0
    for (layer, shape), (count, f, _, _) in layer_shapes(net, x).items():
        inp = torch.randn(shape, dtype=dtype)
        if inp.dim() == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            seconds = time_calls(lambda layer=layer, inp=inp: layer(inp), repeats, warmup=3).median_s
        total_s, total_flops = total_s + count * seconds, total_flops + count * f
        rows.append({"layer": repr(layer), "input": list(shape), "count": count, "gflops": round(f / seconds / 1e9, 1)})
    return {"seconds": total_s, "flops": total_flops, "layers": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(RESULTS / "ceiling"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    formats = {k: v for k, v in FORMATS.items() if k == "float32" or native_bf16()}
    record = {"command": f"python bench/conv_ceiling.py --model {args.model} --batch {args.batch} "
                         f"--size {args.size}", "machine": machine_info(), "formats": {}}
    for name, (dtype, plain, compiled) in formats.items():
        peak = matmul_peak(dtype)
        net = fuse_bn(model).to(memory_format=torch.channels_last, dtype=dtype)  # as the modes run it
        alone = layers_alone(net, x.to(dtype).contiguous(memory_format=torch.channels_last), dtype, args.repeats)
        runners = {m: prepare_inference(model, m) for m in (plain, compiled)}
        timings = time_interleaved({m: (lambda r=r: r(x)) for m, r in runners.items()}, args.repeats)
        share = {m: round(alone["flops"] / t.median_s / peak, 3) for m, t in timings.items()}
        record["formats"][name] = {
            "peak_gflops": round(peak / 1e9, 1), "network_gflop": round(alone["flops"] / 1e9, 2),
            "layers_alone_s": round(alone["seconds"], 4),
            "ceiling_share": round(alone["flops"] / alone["seconds"] / peak, 3),
            "modes": {m: {"seconds": round(t.median_s, 4), "images_per_s": round(args.batch / t.median_s, 1),
                          "peak_share": share[m]} for m, t in timings.items()},
            "layers": alone["layers"]}
    write_result("ceiling", record, args.out, echo=False)
    for name, f in record["formats"].items():
        print(f"{name}: peak {f['peak_gflops']} GFLOP/s; layers alone {f['ceiling_share']:.0%} of it; "
              + ", ".join(f"{m} {v['peak_share']:.0%}" for m, v in f["modes"].items()))


if __name__ == "__main__":
    main()
