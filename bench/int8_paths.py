"""int8 on the CPU two ways, against float32, and what compiling once buys. For ResNet-20 (the shipped
CIFAR-10 weights, test top-1 on the 10,000 original test images) and ResNet-50 (224 px, speed only), in one
run: float32 in the default float32 mode (ONNX Runtime), float32 compiled ahead of time (AOTInductor), where the
CPU computes bfloat16 natively the default bf16 mode and its compiled twin, int8 in
ONNX Runtime (QDQ, per-channel weights; 7-bit weights on x86 without VNNI) and int8 through PyTorch's x86
Inductor path (the ``compile_int8`` mode: torchao's PT2E ``X86InductorQuantizer``, compiled ahead of time; 7-bit
activations without VNNI), the same 512 class-balanced training images calibrating both; throughput timed in
turns, the compile time on the first call and the reload from the cache on the next.

    pip install -e '.[deploy]'   # ONNX Runtime and torchao (PyTorch's PT2E quantizers)
    python bench/int8_paths.py   # writes bench/results/int8/paths.json (--out DIR: elsewhere)
"""
from __future__ import annotations

import argparse
import time

import torch

from common import CIFAR10_LOSSLESS, RESULTS, write_result
from resnets.benchmark.peaks import matmul_peak
from resnets.engine.evaluate import calibration_images, load_checkpoint_and_data
from resnets.engine.predict import evaluate_split
from resnets.inference import fastest_mode, get_mode, prepare_inference
from resnets.machine import machine_info, native_bf16
from resnets.models import create_model
from resnets.prune import size_of
from resnets.timing import time_interleaved


def first_call(make, x: torch.Tensor) -> tuple[object, float]:
    """A runner built by ``make`` and the seconds its building and first call took (export, compile)."""
    start = time.perf_counter()
    runner = make()
    runner(x)
    return runner, round(time.perf_counter() - start, 2)


def network_row(name: str, batch: int, repeats: int, data: str | None) -> dict:
    if data:
        loaded = load_checkpoint_and_data("resnet20_cifar10", data)
        model, size, calibration = loaded.model, 32, calibration_images(loaded, 512)
        x = loaded.aug.eval(loaded.dataset.test.images[:batch])
    else:
        model, size = create_model(name).eval(), 224
        calibration, x = torch.randn(32, 3, size, size), torch.randn(batch, 3, size, size)
    float32 = fastest_mode(float32=True)
    makers = {float32: lambda: prepare_inference(model, float32, calibration),
              "compile": lambda: prepare_inference(model, "compile")}
    if native_bf16():  # the default mode there, and its compiled twin
        makers |= {"bf16": lambda: prepare_inference(model, "bf16"),
                   "compile_bf16": lambda: prepare_inference(model, "compile_bf16")}
    makers |= {"int8": lambda: prepare_inference(model, "int8", calibration),
               "compile_int8": lambda: prepare_inference(model, "compile_int8", calibration)}
    built = {k: first_call(make, x) for k, make in makers.items()}
    _, reload_s = first_call(makers["compile"], x)  # the package is on disk now
    runners = {k: r for k, (r, _) in built.items()}
    with torch.no_grad():
        reference = model(x)
    timings = time_interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, repeats)
    macs = size_of(model, size)["macs"]
    row = {"network": name, "input_size": size, "batch": batch, "macs": macs, "compile_reload_s": reload_s,
           "modes": {k: {"first_call_s": built[k][1], "images_per_s": round(batch / timings[k].median_s, 1),
                         "gflops": round(2 * macs * batch / timings[k].median_s / 1e9, 1),
                         "max_rel_diff": float((runners[k](x) - reference).abs().max() / reference.abs().max())}
                     for k in runners}}
    if data:
        for k, r in runners.items():
            row["modes"][k]["test_top1"] = round(evaluate_split(r, loaded.dataset.test, loaded.dataset.classes,
                                                                loaded.aug, "test", batch_size=256).top1, 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(CIFAR10_LOSSLESS), help="CIFAR-10 for ResNet-20's test accuracy")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "int8"))
    args = p.parse_args()
    formats = {"float32": torch.float32, "int8": torch.int8} | ({"bfloat16": torch.bfloat16} if native_bf16() else {})
    peaks = {k: matmul_peak(dtype) / 1e9 for k, dtype in formats.items()}
    rows = [network_row("resnet20", 64, args.repeats, args.data), network_row("resnet50", 16, args.repeats, None)]
    for row in rows:
        for k, m in row["modes"].items():
            m["peak_share"] = round(m["gflops"] / peaks[get_mode(k).number_format], 3)
    write_result("paths", {"command": "python bench/int8_paths.py", "machine": machine_info(),
                           "peak_gops": {k: round(v, 1) for k, v in peaks.items()}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
