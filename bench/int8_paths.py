"""int8 on the CPU two ways, against float32, and what compiling once buys. For ResNet-20 (the shipped
CIFAR-10 weights, test top-1 on the 10,000 original test images) and ResNet-50 (224 px, speed only), in one
run: float32 in the default float32 mode (ONNX Runtime), float32 compiled ahead of time (AOTInductor), int8 in
ONNX Runtime (QDQ, per-channel weights; 7-bit weights on x86 without VNNI) and int8 through PyTorch's x86
Inductor path (torchao's PT2E ``X86InductorQuantizer``, compiled ahead of time; 7-bit activations without
VNNI), the same 512 class-balanced training images calibrating both; throughput timed in
turns, the compile time on the first call and the reload from the cache on the next.

    pip install torchao          # the PT2E quantizer
    python bench/int8_paths.py   # writes bench/results/int8/paths.json
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import time
import warnings

import torch

from common import CIFAR10_LOSSLESS, RESULTS, write_result
from resnets.benchmark.peaks import matmul_peak
from resnets.engine.evaluate import calibration_images, load_checkpoint_and_data
from resnets.engine.predict import evaluate_split
from resnets.inference import fastest_mode, prepare_inference
from resnets.inference.aot import aot_runner
from resnets.inference.fuse import fuse_bn
from resnets.machine import int8_saturates, machine_info
from resnets.models import create_model
from resnets.prune import size_of
from resnets.timing import time_interleaved


def inductor_int8(model: torch.nn.Module, calibration: torch.Tensor):
    """``model`` quantized by PT2E for x86 Inductor (static, per-channel weights, calibrated on
    ``calibration``) and compiled ahead of time: a runner from float32 images to float32 logits."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    net = fuse_bn(copy.deepcopy(model).eval())
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # strict: a module called twice (a block's ReLU) gets one partition per call, as the quantizer needs
        graph = torch.export.export(net, (calibration[:2],), dynamic_shapes=({0: batch},), strict=True).module()
        quantizer = x86.X86InductorQuantizer()
        # 7-bit activations where int8 products can saturate (x86 without VNNI), as ONNX Runtime's 7-bit weights
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=int8_saturates()))
        prepared = prepare_pt2e(graph, quantizer)
        for chunk in calibration.split(64):
            prepared(chunk)
        converted = convert_pt2e(prepared)
    salt = hashlib.sha256(calibration.numpy().tobytes()).digest()
    run = aot_runner(converted, torch.float32, salt)

    def runner(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return run(x)

    return runner


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
              "compile": lambda: prepare_inference(model, "compile"),
              "int8 onnxruntime": lambda: prepare_inference(model, "int8", calibration),
              "int8 inductor": lambda: inductor_int8(model, calibration)}
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
    peaks = {"float32": matmul_peak(torch.float32) / 1e9, "int8": matmul_peak(torch.int8) / 1e9}
    rows = [network_row("resnet20", 64, args.repeats, args.data), network_row("resnet50", 16, args.repeats, None)]
    for row in rows:
        for k, m in row["modes"].items():
            m["peak_share"] = round(m["gflops"] / peaks["int8" if k.startswith("int8") else "float32"], 3)
    write_result("paths", {"command": "python bench/int8_paths.py", "machine": machine_info(),
                           "peak_gops": {k: round(v, 1) for k, v in peaks.items()}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
