"""The benchmark suite behind ``resnets bench``: every figure is a median over repeats after a warm-up,
and reported as a ratio to the naive baseline (eager float32 NCHW) measured in the same run.

- inference: images/s and p50/p99 latency per mode (``deploy.inference.MODES``), and the largest
  difference from the baseline's logits;
- training: images/s per mode (naive, channels_last, bf16 autocast, compile);
- the machine's peak: large float32 and bfloat16 matrix multiplies (the faster of BLAS and oneDNN), so that each model figure is
  also a fraction of what the cores can do (model FLOP/s / matmul FLOP/s);
- memory: peak resident memory of one training step per image, with and without gradient checkpointing,
  measured in a fresh process (on CUDA: the peak of the caching allocator).

``device="cuda"`` runs the same suite on a GPU: timings synchronise the device, compiled inference replays
CUDA graphs, bfloat16 is autocast on the GPU, the ONNX Runtime modes (CPU-only here) are left out, and
float32 modes are compared with the tolerance of TF32 convolutions (cuDNN's default).
"""
from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .deploy.inference import (available_modes, native_bf16, onnx_session, onnxruntime_available,
                               prepare_inference, tolerance)
from .errors import ResnetsError
from .models import create_model
from .models.profile import profile_model

TRAIN_MODES = ("naive", "channels_last", "bf16", "compile")


@dataclass
class Timing:
    median_s: float
    p50_s: float
    p99_s: float
    samples: int


def _timing(times: list[float]) -> Timing:
    times = sorted(times)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return Timing(statistics.median(times), statistics.median(times), p99, len(times))


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> Timing:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, Timing]:
    """Wall time of each function, timed in turns: ``warmup`` untimed calls of each, then ``repeats``
    rounds of one timed call of each (in a rotating order). A burst of load from elsewhere on a shared
    machine then slows every contender alike instead of the one that happened to be running."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {n: _timing(t) for n, t in times.items()}


def synced(fn: Callable[[], object], device: torch.device | str) -> Callable[[], None]:
    """``fn`` followed by waiting for the device, so that wall time covers the work itself (CUDA is asynchronous)."""
    if torch.device(device).type != "cuda":
        return fn  # type: ignore[return-value]

    def run() -> None:
        fn()
        torch.cuda.synchronize()

    return run


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device: torch.device | str = "cpu") -> float:
    """Operations per second of an ``n x n`` by ``n x n`` matrix multiply in ``dtype`` (median over repeats).

    For floating point, two GEMM kernels are timed and the faster one counts: the BLAS behind ``torch.mm``
    and oneDNN's, reached through a 1x1 convolution over ``n`` pixels. On some CPUs (AMD with MKL) the two
    differ by 2x, and a peak from the slower one would make the models look faster than the machine.
    For ``torch.int8``, ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32), the GEMM behind the int8 mode
    (``torch._int_mm`` is a reference loop on CPUs without VNNI). On CUDA, ``torch.mm`` (cuBLAS), float only."""
    if torch.device(device).type == "cuda":  # float32 as TF32, like cuDNN's convolutions by default
        a = torch.randn(n, n, device=device, dtype=dtype)
        tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, True
        try:
            return 2 * n**3 / time_calls(synced(lambda: torch.mm(a, a), device), repeats, warmup=3).median_s
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    if dtype == torch.int8:
        return 2 * n**3 / time_calls(_int8_matmul(n), repeats, warmup=3).median_s
    with torch.no_grad():
        timings = time_interleaved(cpu_matmuls(dtype, n), repeats, warmup=3)
    return 2 * n**3 / min(t.median_s for t in timings.values())


def cpu_matmuls(dtype: torch.dtype, n: int) -> dict[str, Callable[[], object]]:
    """Two ways to run an ``n x n`` by ``n x n`` product (``2 n^3`` operations) in ``dtype`` on the CPU: the
    BLAS behind ``torch.mm``, and oneDNN's GEMM through a 1x1 convolution over a row of ``n`` pixels."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x = torch.randn(1, n, 1, n, dtype=dtype).to(memory_format=torch.channels_last)
    w = b.view(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    return {"blas": lambda: torch.mm(a, b), "onednn": lambda: F.conv2d(x, w)}


def _int8_matmul(n: int) -> Callable[[], object]:
    """An ``n x n`` by ``n x n`` uint8 x int8 -> int32 product in ONNX Runtime."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_matmul",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [b])
    session = onnx_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {"a": a})


def _peak_kind(mode: str) -> str:
    return "int8" if mode == "int8" else "bf16" if "bf16" in mode else "fp32"


@dataclass
class InferenceRow:
    model: str
    input_size: int
    batch: int
    mode: str
    images_per_s: float
    p50_ms: float
    p99_ms: float
    speedup: float  # over the eager baseline of this model and batch, in this run
    max_rel_diff: float  # max |logits - baseline| / max |baseline|
    agrees: bool  # within the tolerance of the mode's number format
    peak_fraction: float  # model FLOP/s / matmul FLOP/s (of the mode's number format: fp32, bf16 or int8)


@dataclass
class TrainingRow:
    model: str
    input_size: int
    batch: int
    mode: str
    dtype: str  # "bfloat16" (autocast) or "float32": "compile" runs in bfloat16 only where that is native
    images_per_s: float
    speedup: float
    peak_fraction: float


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


def _gflops(model: torch.nn.Module, size: int) -> float:
    """Forward FLOPs (2 x MACs) of one image, counted on the model."""
    return 2 * sum(r.macs for r in profile_model(model, size)) / 1e9


def _fresh_compiler() -> None:
    """Forget earlier compilations, so that each configuration is compiled for itself (dynamo stops
    compiling a function after a few recompilations, and would silently fall back to eager)."""
    torch._dynamo.reset()


def bench_inference(name: str, size: int, batch: int, modes: tuple[str, ...], peaks: dict[str, float],
                    repeats: int, device: torch.device | str = "cpu") -> list[InferenceRow]:
    _fresh_compiler()
    model = create_model(name).eval()
    gflops = _gflops(model, size)
    model, x = model.to(device), torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():
        reference = model(x)
    runners = {mode: prepare_inference(model, mode, x) for mode in modes}
    timings = time_interleaved({m: synced(lambda r=r: r(x), device) for m, r in runners.items()}, repeats)
    rows: list[InferenceRow] = []
    base_rate = None
    for mode, runner in runners.items():
        t = timings[mode]
        diff = ((runner(x) - reference).abs().max() / reference.abs().max()).item()
        rate = batch / t.median_s
        base_rate = base_rate or rate
        peak = peaks[_peak_kind(mode)]
        rows.append(InferenceRow(name, size, batch, mode, rate, 1e3 * t.p50_s, 1e3 * t.p99_s, rate / base_rate, diff,
                                 diff <= tolerance(mode, device), rate * gflops * 1e9 / peak))
    return rows


def _trains_in_bf16(mode: str, device: torch.device | str) -> bool:
    """Whether training ``mode`` autocasts to bfloat16: "bf16" always, "compile" where bfloat16 is native (as
    training's ``--precision auto`` does; emulated bfloat16 is many times slower than float32)."""
    return mode == "bf16" or (mode == "compile" and native_bf16(device))


def _training_setup(name: str, size: int, batch: int, mode: str, device: torch.device | str, stages: int = 0
                    ) -> tuple[torch.nn.Module, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The model (its stem and first ``stages`` stages checkpointed), an input batch, and the float32 logits of
    training ``mode`` (``TRAIN_MODES``): channels_last unless "naive", bfloat16 autocast as ``_trains_in_bf16``
    says, the model through ``torch.compile`` for "compile"."""
    model = create_model(name).to(device)
    model.set_grad_checkpointing(stages > 0, stages)
    x = torch.randn(batch, 3, size, size, device=device)
    if mode != "naive":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model) if mode == "compile" else model
    low = _trains_in_bf16(mode, device)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=low):
            return compiled(inputs).float()

    return model, x, forward


def train_step(name: str, size: int, batch: int, mode: str, device: torch.device | str) -> Callable[[], None]:
    """One SGD step of ``name`` on a fixed random ``batch`` in training ``mode`` (``TRAIN_MODES``), as the
    benchmark times it."""
    model, x, forward = _training_setup(name, size, batch, mode, device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return synced(step, device)


def bench_training(name: str, size: int, batch: int, modes: tuple[str, ...], peaks: dict[str, float],
                   repeats: int, device: torch.device | str = "cpu") -> list[TrainingRow]:
    rows: list[TrainingRow] = []
    base_rate = None
    _fresh_compiler()
    steps = {mode: train_step(name, size, batch, mode, device) for mode in modes}
    gflops = 3 * _gflops(create_model(name), size)  # forward + backward is about three forwards
    timings = time_interleaved(steps, repeats, warmup=3)
    for mode in modes:
        rate = batch / timings[mode].median_s
        base_rate = base_rate or rate
        low = _trains_in_bf16(mode, device)
        peak = peaks["bf16"] if low else peaks["fp32"]
        rows.append(TrainingRow(name, size, batch, mode, "bfloat16" if low else "float32", rate, rate / base_rate,
                                rate * gflops * 1e9 / peak))
    return rows


_MEMORY_CHILD = """
import sys, torch
from resnets.bench import checkpointed_step

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
    model, x, forward = _training_setup(name, size, batch, mode, device, stages)
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
        _, x, forward = _training_setup(name, size, n, mode, "cpu", stages)
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
    counts = range(create_model(name).num_stages + 1)
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


def run_bench(*, quick: bool = False, compile: bool = True, device: str = "cpu",
              log: Callable[[str], None] = print) -> BenchReport:
    """The whole suite on ``device`` ("cpu" or "cuda"); ``quick`` runs one small configuration of each part."""
    from .machine import machine_info

    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ResnetsError("--device cuda: no CUDA GPU is available")
    modes = available_modes(device, compile=compile)
    train_modes = tuple(m for m in TRAIN_MODES
                        if (compile or m != "compile") and (m != "bf16" or native_bf16(device)))
    n = 512 if quick else 8192 if cuda else 2048
    # the peaks of the number formats that some mode runs in: bfloat16 where native, int8 in ONNX Runtime on the CPU
    kinds = (("fp32", torch.float32),) + ((("bf16", torch.bfloat16),) if native_bf16(device) else ()) + (
        (("int8", torch.int8),) if onnxruntime_available() and not cuda else ())
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
        rows = bench_training(name, size, batch, train_modes, peaks, repeats=3 if quick else 10, device=device)
        report.training += rows
        for r in rows:
            log(f"training {name} {size}px b{batch} {r.mode:<13} {r.images_per_s:8.1f} img/s  x{r.speedup:.2f}")
    memory_modes = ("naive", "bf16") if native_bf16(device) else ("naive",)
    memory = [("resnet20", 32, 64)] if quick else [("resnet50", 224, 16), ("resnet56", 32, 128)]
    for (name, size, batch), mode in itertools.product(memory, memory_modes):
        rows = bench_memory(name, size, batch, device, mode=mode)
        report.memory += rows
        for r in rows:
            log(f"memory {name} {size}px b{batch} {mode} checkpointed stages {r.checkpointed_stages}: activations "
                f"{r.activation_mb_per_image:.1f} MB/image, peak RSS {r.peak_rss_mb_per_image:.1f} MB/image, "
                f"step {r.step_s:.3f} s (x{r.time_ratio:.2f})")
    return report
