"""The benchmark suite behind ``resnets bench``: every figure is a median over repeats after a warm-up,
and reported as a ratio to the naive baseline (eager float32 NCHW) measured in the same run.

- inference: images/s and p50/p99 latency per mode (``inference.MODES``), and the largest
  difference from the baseline's logits;
- training: images/s per mode (naive, channels_last, bf16 autocast, compile);
- the machine's peak: large float32 and bfloat16 matrix multiplies (the faster of BLAS and oneDNN), so that each model
  figure is also a fraction of what the cores can do (model FLOP/s / matmul FLOP/s);
- memory: peak resident memory of one training step per image, with and without gradient checkpointing,
  measured in a fresh process (on CUDA: the peak of the caching allocator).

``device="cuda"`` runs the same suite on a GPU: timings synchronise the device, compiled inference replays
CUDA graphs, bfloat16 is autocast on the GPU, the ONNX Runtime modes (CPU-only here) are left out, and
float32 modes are compared with the tolerance of TF32 convolutions (cuDNN's default).
"""

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ..errors import ResnetsError
from ..inference import available_modes, get_mode, onnxruntime_available
from ..machine import machine_info, native_bf16
from .memory import MemoryRow, bench_memory
from .peaks import matmul_peak
from .speed import TRAIN_MODES, InferenceRow, TrainingRow, bench_inference, bench_training

__all__ = ["BenchReport", "run_bench"]


@dataclass
class BenchReport:
    machine: dict[str, object]
    peak_flops: dict[str, float]
    device: str = "cpu"  # where the suite ran
    inference: list[InferenceRow] = field(default_factory=list)
    training: list[TrainingRow] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run_bench(*, quick: bool = False, compile: bool = True, device: str = "cpu",
              log: Callable[[str], None] = print) -> BenchReport:
    """The whole suite on ``device`` ("cpu" or "cuda"); ``quick`` runs one small configuration of each part."""
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ResnetsError("--device cuda: no CUDA GPU is available")
    modes = available_modes(device, compile=compile)
    train_modes = tuple(m for m in TRAIN_MODES
                        if (compile or m != "compile") and (m != "bf16" or native_bf16(device)))
    n = 512 if quick else 8192 if cuda else 2048
    # the peaks of the number formats that some mode runs in: bfloat16 where native, int8 where an int8 mode runs
    # (its peak is ONNX Runtime's int8 GEMM, so only where that is installed)
    int8 = onnxruntime_available() and any(get_mode(m).number_format == "int8" for m in modes)
    kinds = (("fp32", torch.float32),) + ((("bf16", torch.bfloat16),) if native_bf16(device) else ()) + (
        (("int8", torch.int8),) if int8 else ())
    peaks = {kind: matmul_peak(dtype, n, device=device) for kind, dtype in kinds}
    report = BenchReport(machine_info(), peaks, torch.device(device).type)
    log("matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} G/s" for k, v in peaks.items()))
    inference = [("resnet20", 32, 16)] if quick else [
        ("resnet18", 224, 1), ("resnet18", 224, 16), ("resnet50", 224, 1), ("resnet50", 224, 16),
        ("resnet20", 32, 256), ("resnet56", 32, 256)] + ([("resnet50", 224, 256)] if cuda else [])
    for name, size, batch in inference:
        rows = bench_inference(name, size, batch, modes, peaks, repeats=3 if quick else (20 if batch == 1 else 10),
                               device=device)
        report.inference += rows
        for r in rows:
            log(f"inference {name} {size}px b{batch} {r.mode:<13} {r.images_per_s:8.1f} img/s  x{r.speedup:.2f}  "
                f"p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  diff {r.max_rel_diff:.1e}")
    training = [("resnet20", 32, 32)] if quick else [
        ("resnet20", 32, 128), ("resnet56", 32, 128), ("resnet18", 224, 32), ("resnet50", 224, 32)] + (
        [("resnet20", 32, 1024), ("resnet50", 224, 256)] if cuda else [])
    for name, size, batch in training:
        steps = bench_training(name, size, batch, train_modes, peaks, repeats=3 if quick else 10, device=device)
        report.training += steps
        for t in steps:
            log(f"training {name} {size}px b{batch} {t.mode:<13} {t.images_per_s:8.1f} img/s  x{t.speedup:.2f}")
    memory_modes = ("naive", "bf16") if native_bf16(device) else ("naive",)
    memory = [("resnet20", 32, 64)] if quick else [("resnet50", 224, 16), ("resnet56", 32, 128)]
    for (name, size, batch), mode in itertools.product(memory, memory_modes):
        footprints = bench_memory(name, size, batch, device, mode=mode)
        report.memory += footprints
        for m in footprints:
            log(f"memory {name} {size}px b{batch} {mode} checkpointed stages {m.checkpointed_stages}: activations "
                f"{m.activation_mb_per_image:.1f} MB/image, peak RSS {m.peak_rss_mb_per_image:.1f} MB/image, "
                f"step {m.step_s:.3f} s (x{m.time_ratio:.2f})")
    return report
