"""Speed of each inference and training mode against the naive baseline (eager float32 NCHW) of the same model
and batch, in the same run, and as a share of the matmul peak of the mode's number format."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..inference import get_mode, prepare_inference, tolerance
from ..machine import native_bf16
from ..models import create_classifier
from ..models.profile import profile_model
from ..models.resnet import StagedNet
from ..timing import synced, time_interleaved

TRAIN_MODES = ("naive", "channels_last", "bf16", "compile")


def _peak_kind(mode: str) -> str:
    """The number format whose matmul peak ``mode`` is measured against."""
    return {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}[get_mode(mode).number_format]


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
    model = create_classifier(name).eval()
    gflops = _gflops(model, size)
    model, x = model.to(device), torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():
        reference = model(x)
    runners = {mode: prepare_inference(model, mode, x) for mode in modes}
    timings = time_interleaved({m: synced(partial(r, x), device) for m, r in runners.items()}, repeats)
    rows: list[InferenceRow] = []
    base_rate = None
    for mode, runner in runners.items():
        t = timings[mode]
        diff = ((runner(x) - reference).abs().max() / reference.abs().max()).item()
        rate = batch / t.median_s
        base_rate = base_rate or rate
        peak = peaks.get(_peak_kind(mode))  # none for int8 without ONNX Runtime, whose GEMM defines it
        rows.append(InferenceRow(name, size, batch, mode, rate, 1e3 * t.p50_s, 1e3 * t.p99_s, rate / base_rate, diff,
                                 diff <= tolerance(mode, device),
                                 rate * gflops * 1e9 / peak if peak else float("nan")))
    return rows


def _trains_in_bf16(mode: str, device: torch.device | str) -> bool:
    """Whether training ``mode`` autocasts to bfloat16: "bf16" always, "compile" where bfloat16 is native (as
    training's ``--precision auto`` does; emulated bfloat16 is many times slower than float32)."""
    return mode == "bf16" or (mode == "compile" and native_bf16(device))


def training_setup(name: str, size: int, batch: int, mode: str, device: torch.device | str, stages: int = 0
                    ) -> tuple[StagedNet, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The model (its stem and first ``stages`` stages checkpointed), an input batch, and the float32 logits of
    training ``mode`` (``TRAIN_MODES``): channels_last unless "naive", bfloat16 autocast as ``_trains_in_bf16``
    says, the model through ``torch.compile`` for "compile"."""
    model = create_classifier(name).to(device)
    model.set_grad_checkpointing(stages > 0, stages)
    x = torch.randn(batch, 3, size, size, device=device)
    if mode != "naive":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        x = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model) if mode == "compile" else model
    low = _trains_in_bf16(mode, device)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=low):
            return compiled(inputs).float()

    return model, x, forward


def train_step(name: str, size: int, batch: int, mode: str, device: torch.device | str) -> Callable[[], None]:
    """One SGD step of ``name`` on a fixed random ``batch`` in training ``mode`` (``TRAIN_MODES``), as the
    benchmark times it."""
    model, x, forward = training_setup(name, size, batch, mode, device)
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
    gflops = 3 * _gflops(create_classifier(name), size)  # forward + backward is about three forwards
    timings = time_interleaved(steps, repeats, warmup=3)
    for mode in modes:
        rate = batch / timings[mode].median_s
        base_rate = base_rate or rate
        low = _trains_in_bf16(mode, device)
        peak = peaks["bf16"] if low else peaks["fp32"]
        rows.append(TrainingRow(name, size, batch, mode, "bfloat16" if low else "float32", rate, rate / base_rate,
                                rate * gflops * 1e9 / peak))
    return rows
