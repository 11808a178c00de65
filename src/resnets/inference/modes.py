"""Inference modes, from the naive baseline to the fast paths, behind one call:
``runner = prepare_inference(model, "bf16")`` then ``logits = runner(images)`` (float32 NCHW in, float32 out).

| mode            | what it does                                                                |
|-----------------|-----------------------------------------------------------------------------|
| `eager`         | the model as most user code runs it: float32, NCHW, batch norm as a layer   |
| `channels_last` | NHWC memory layout (oneDNN/cuDNN's preferred layout)                        |
| `fused`         | batch norm folded into the convolutions, plus channels_last                 |
| `bf16`          | `fused` with bfloat16 weights and activations                               |
| `compile`       | `fused` compiled with weights frozen as constants: on the CPU ahead of time |
|                 | by AOTInductor, once per network and image shape, and cached on disk        |
|                 | (``aot.py``); on CUDA by `torch.compile`, replayed as CUDA graphs           |
| `compile_bf16`  | `bf16` compiled the same way                                                |
| `onnxruntime`   | ONNX export run by ONNX Runtime (when `onnxruntime` is installed)           |
| `int8`          | ONNX Runtime static int8 (``onnx.quantize_onnx``), calibrated on the        |
|                 | example input                                                               |
| `compile_int8`  | PyTorch's static int8 for x86 (``int8.py``: PT2E, torchao), calibrated on   |
|                 | the example input, compiled ahead of time and cached like `compile`         |
| `openvino`      | OpenVINO (``openvino.py``, when installed): converted once and cached       |
| `openvino_bf16` | OpenVINO with its bfloat16 precision hint (where bfloat16 is native)        |
| `openvino_int8` | OpenVINO int8 by NNCF's post-training quantization on the example input     |

Each mode is one record (``Mode``, in ``REGISTRY``): its engine, number format, tolerance, what it needs (an
example input, calibration, a package, native bfloat16), whether it compiles slowly, where it runs and its
compiled twin. A new engine is a new record and its ``build`` function.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..machine import cpu_isa, native_bf16
from .aot import aot_runner, package_path
from .fuse import fuse_bn
from .int8 import int8_runner, torchao_available
from .onnx import onnx_file, onnx_runner, onnxruntime_available
from .openvino import openvino_available, openvino_runner

Runner = Callable[[torch.Tensor], torch.Tensor]
Build = Callable[[nn.Module, "torch.Tensor | None"], Runner]  # (a copy of the model in eval mode, example) -> runner
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}  # what a weight costs in each number format
TF32_TOLERANCE = 1e-2  # float32 modes on CUDA: cuDNN convolutions round their inputs to TF32 by default
# Seconds of work in the plain mode above which compiling its twin pays: compiling costs 5-20 s once on 2 cores
# (then the package is cached) and the twin runs 1.3-2x as fast, so past about 3x the compile time it is ahead.
COMPILE_PAYS_AFTER_S = 30.0
# An int8 network may change the top-1 class of at most this share of its calibration images (checked on up
# to AGREEMENT_IMAGES of them): more says the network's margins are too small for 8 bits (a network trained
# briefly, or one whose logits are large beside the gaps between them), whatever the CPU.
INT8_MAX_MOVED = 0.03
AGREEMENT_IMAGES = 64


def _installed() -> bool:
    return True


@dataclass(frozen=True)
class Mode:
    """Everything about one inference mode, in one record (as a set of weights carries its metadata)."""

    name: str
    engine: str  # what runs it: pytorch, aotinductor, onnxruntime or openvino
    number_format: str  # float32, bfloat16 or int8: the matmul peak its speed is a share of, a weight's bytes
    tolerance: float  # the largest relative difference from float32 eager (max |dy| / max |y|) it may show
    build: Build
    example: bool = False  # needs an example input: an export traces it, a calibrated mode calibrates on it
    calibrated: bool = False  # int8, with activation ranges taken from the example input
    compiles: bool = False  # compiles code on first use (seconds to minutes, then cached): left out on request
    cpu_only: bool = False
    native_only: bool = False  # a bfloat16 mode that needs native bfloat16 even where emulation is asked for
    installed: Callable[[], bool] = _installed  # whether the engine's package is installed
    twin: str | None = None  # the mode that computes the same numbers, compiled ahead of time

    @property
    def weight_bytes(self) -> int:
        return WEIGHT_BYTES[self.number_format]

    def runs_on(self, device: torch.device | str = "cpu", *, compile: bool = True, emulated_bf16: bool = False
                ) -> bool:
        """Whether this mode runs on ``device`` here (``compile``, ``emulated_bf16``: see ``available_modes``)."""
        cuda = torch.device(device).type == "cuda"
        bf16 = self.number_format != "bfloat16" or native_bf16(device) or (emulated_bf16 and not self.native_only)
        return (compile or not self.compiles) and not (self.cpu_only and cuda) and bf16 and self.installed()


log = logging.getLogger("resnets")


def _eager(model: nn.Module, example: torch.Tensor | None) -> Runner:
    return _no_grad(model)


def _channels_last(model: nn.Module, example: torch.Tensor | None) -> Runner:
    net = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs lack it)
    return _no_grad(lambda x: net(_layout(x)))


def _folded(dtype: torch.dtype) -> Build:
    def build(model: nn.Module, example: torch.Tensor | None) -> Runner:
        net = _folded_net(model, dtype)
        return _no_grad(lambda x: net(_layout(x.to(dtype))).float())

    return build


def _compiled(dtype: torch.dtype) -> Build:
    def build(model: nn.Module, example: torch.Tensor | None) -> Runner:
        net = _folded_net(model, dtype)
        if not next(model.parameters()).is_cuda:
            return _no_grad(aot_runner(net, dtype))
        graph = _cuda_compiled(net)  # a CUDA graph's output is overwritten by its next replay: clone it
        return _no_grad(lambda x: graph(_layout(x.to(dtype))).float().clone())

    return build


def _onnxruntime(model: nn.Module, example: torch.Tensor | None) -> Runner:
    return onnx_runner(onnx_file(model, cast(torch.Tensor, example), int8=False))


def _onnxruntime_int8(model: nn.Module, example: torch.Tensor | None) -> Runner:
    example = cast(torch.Tensor, example)
    return check_agreement(model, onnx_runner(onnx_file(model, example, int8=True)), example, "int8")


def _compile_int8(model: nn.Module, example: torch.Tensor | None) -> Runner:
    if next(model.parameters()).is_cuda:
        raise ConfigError("the compile_int8 mode runs on the CPU only")
    example = cast(torch.Tensor, example)
    run = int8_runner(_folded_net(model, torch.float32), example)
    return check_agreement(model, _no_grad(run), example, "compile_int8")


def _openvino(precision: str) -> Build:
    def build(model: nn.Module, example: torch.Tensor | None) -> Runner:
        return openvino_runner(model, precision)

    return build


def _openvino_int8(model: nn.Module, example: torch.Tensor | None) -> Runner:
    example = cast(torch.Tensor, example)
    return check_agreement(model, openvino_runner(model, calibration=example), example, "openvino_int8")


REGISTRY: dict[str, Mode] = {m.name: m for m in (
    Mode("eager", "pytorch", "float32", 0.0, _eager),  # the model as most user code runs it
    Mode("channels_last", "pytorch", "float32", 1e-4, _channels_last),
    Mode("fused", "pytorch", "float32", 1e-4, _folded(torch.float32), twin="compile"),
    Mode("bf16", "pytorch", "bfloat16", 5e-2, _folded(torch.bfloat16), twin="compile_bf16"),
    Mode("compile", "aotinductor", "float32", 1e-4, _compiled(torch.float32), compiles=True),
    Mode("compile_bf16", "aotinductor", "bfloat16", 5e-2, _compiled(torch.bfloat16), compiles=True),
    Mode("onnxruntime", "onnxruntime", "float32", 1e-4, _onnxruntime, example=True, cpu_only=True,
         installed=onnxruntime_available),
    Mode("int8", "onnxruntime", "int8", 1e-1, _onnxruntime_int8, example=True, calibrated=True, cpu_only=True,
         installed=onnxruntime_available),
    Mode("compile_int8", "aotinductor", "int8", 1e-1, _compile_int8, example=True, calibrated=True, compiles=True,
         cpu_only=True, installed=torchao_available),
    # (OpenVINO's bfloat16 hint falls back to float32 where bfloat16 is not native: no emulation)
    Mode("openvino", "openvino", "float32", 1e-4, _openvino("float32"), cpu_only=True,
         installed=openvino_available),
    Mode("openvino_bf16", "openvino", "bfloat16", 5e-2, _openvino("bfloat16"), cpu_only=True, native_only=True,
         installed=openvino_available),
    Mode("openvino_int8", "openvino", "int8", 1e-1, _openvino_int8, example=True, calibrated=True,
         cpu_only=True, installed=openvino_available),
)}
MODES = tuple(REGISTRY)
# The fastest float32 modes that compile nothing slow now, fastest first (the speed suite's ResNet rows)
FLOAT32_PREFERENCE = ("openvino", "onnxruntime", "fused")
BF16_PREFERENCE = ("openvino_bf16", "bf16")


def get_mode(name: str) -> Mode:
    """The record of inference mode ``name``; a ``ConfigError`` naming the modes for an unknown one."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown inference mode {name!r}; expected one of {', '.join(MODES)}")
    return REGISTRY[name]


def tolerance(mode: str, device: torch.device | str = "cpu") -> float:
    """The largest relative difference from float32 eager that ``mode`` may show on ``device``."""
    tol = get_mode(mode).tolerance
    return TF32_TOLERANCE if torch.device(device).type == "cuda" and 0 < tol < TF32_TOLERANCE else tol


def fastest_mode(device: torch.device | str = "cpu", *, float32: bool = False, model: nn.Module | None = None,
                 shape: tuple[int, ...] | None = None, images: float = 0) -> str:
    """The fastest inference mode on ``device`` whose numbers agree with float32 within its number format, and
    that compiles nothing slow now unless the work ahead pays for it: bfloat16 where it is native (unless
    ``float32``: then the numbers are float32's to about 1e-6), else float32; in either format OpenVINO where
    it is installed (it converts a network in about a second for ResNet-20 to a few for ResNet-50, cached
    after, and was the fastest engine of the speed suite on AMX and AVX-512-BF16 CPUs, within 4% of its own
    THROUGHPUT hint), else in float32 ONNX Runtime (as fast as folded PyTorch or faster in every row of the
    speed suite), else PyTorch with batch norm folded.

    Given the ``model`` and the image ``shape`` (channels, height, width), a PyTorch mode whose compiled twin
    is already in the cache (``aot.py``: an earlier run in ``compile_bf16`` or ``compile`` paid the
    compilation) gives way to it: ``bf16`` to ``compile_bf16``, ``fused`` to ``compile``, faster in every row
    of the speed suite and loaded in a second or two. ``images`` is the work ahead (``math.inf`` for a server):
    where the plain mode would take longer than ``COMPILE_PAYS_AFTER_S`` over it (timed on one batch), the twin
    is chosen and compiles on its first call."""
    runs = available_modes(device, compile=False)
    prefer = BF16_PREFERENCE if not float32 and native_bf16(device) else FLOAT32_PREFERENCE
    mode = next(m for m in prefer if m in runs)
    twin = REGISTRY[mode].twin
    if twin is None or model is None or shape is None or torch.device(device).type != "cpu":
        return mode
    dtype = torch.bfloat16 if REGISTRY[mode].number_format == "bfloat16" else torch.float32
    net = _folded_net(model, dtype)
    if package_path(net, tuple(shape), dtype).is_file():
        return twin
    return twin if _seconds_for(net, dtype, tuple(shape), images) > COMPILE_PAYS_AFTER_S else mode


def _seconds_for(net: nn.Module, dtype: torch.dtype, shape: tuple[int, ...], images: float) -> float:
    """About how long the folded ``net`` (the plain mode: ``_folded_net``) takes in ``dtype`` for ``images``
    images of ``shape``: one batch of up to 16 timed after a warm-up call."""
    if images <= 0 or math.isinf(images):
        return images
    x = _layout(torch.zeros(int(min(images, 16)), *shape, dtype=dtype))
    with torch.no_grad():
        net(x)
        start = time.perf_counter()
        net(x)
    return (time.perf_counter() - start) / len(x) * images


def available_modes(device: torch.device | str = "cpu", *, compile: bool = True, emulated_bf16: bool = False
                    ) -> tuple[str, ...]:
    """The inference modes that run on ``device``: the ONNX Runtime and OpenVINO ones on the CPU where they are
    installed, the bfloat16 ones where bfloat16 is native (or, with ``emulated_bf16``, PyTorch's anywhere: slow,
    but the same numbers), the ones that compile code slowly unless ``compile`` is False (PyTorch's int8 on the
    CPU where torchao is installed)."""
    return tuple(m for m, r in REGISTRY.items() if r.runs_on(device, compile=compile, emulated_bf16=emulated_bf16))


def _layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _cuda_compiled(model: nn.Module) -> Runner:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants, folded into the kernels
    # CUDA graphs replay the whole forward as one launch (small batches are launch-bound).
    return torch.compile(model, mode="reduce-overhead")


def prepare_inference(model: nn.Module, mode: str, example: torch.Tensor | None = None) -> Runner:
    """A function from float32 NCHW images to float32 logits that runs ``model`` (left untouched) in ``mode``.

    ``example`` is needed by the modes whose record says so (``Mode.example``: the ONNX export traces it, and
    the int8 modes calibrate on it: give real images for real accuracy)."""
    record = get_mode(mode)
    if record.example and example is None:
        raise ConfigError(f"the {mode} mode needs an example input (the export's, and int8's calibration)")
    if record.cpu_only and any(p.is_cuda for p in model.parameters()):
        raise ConfigError(f"the {mode} mode runs on the CPU only")
    if record.native_only and not native_bf16("cpu"):  # (such modes run on the CPU only)
        raise ConfigError(f"the {mode} mode needs a CPU with native bfloat16 (AVX512-BF16 or AMX), and this one "
                          f"runs at {cpu_isa()}; use a float32 mode ({', '.join(FLOAT32_PREFERENCE)})")
    return record.build(copy.deepcopy(model).eval(), example)


def int8_moved(model: nn.Module, run: Runner, images: torch.Tensor) -> float:
    """The share of ``images`` whose top-1 class ``run`` (an int8 runner of ``model``) changes from float32."""
    x = images[:AGREEMENT_IMAGES].float()
    with torch.inference_mode():
        return (model(x).argmax(1) != run(x).argmax(1)).float().mean().item()


def check_agreement(model: nn.Module, run: Runner, calibration: torch.Tensor, mode: str) -> Runner:
    """``run``, which after its first answer warns in one line where it changes the top-1 class of more than
    ``INT8_MAX_MOVED`` of the calibration images: the numbers it gives are then not the network's. (After the
    first answer: a lazily compiled runner compiles then, and refuses wrong input before any work.)"""
    checked = False

    def run_checked(x: torch.Tensor) -> torch.Tensor:
        nonlocal checked
        y = run(x)
        if not checked:
            checked = True
            moved, n = int8_moved(model, run, calibration), min(len(calibration), AGREEMENT_IMAGES)
            if moved > INT8_MAX_MOVED:
                log.warning("%s changes the top-1 class of %d of %d calibration images (%.0f%%): this network's "
                            "margins are too small for 8 bits; use bf16 or fused for its real accuracy", mode,
                            round(moved * n), n, 100 * moved)
        return y

    return run_checked


def _folded_net(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` as the fused and compiled modes run it: batch norm folded, channels_last, in ``dtype``."""
    return fuse_bn(model).to(memory_format=torch.channels_last, dtype=dtype)  # type: ignore[call-overload]


def _no_grad(fn: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return run
