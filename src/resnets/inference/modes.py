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
"""
from __future__ import annotations

import copy
import logging
import math
import time
from typing import Callable, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..machine import native_bf16
from .aot import aot_runner, package_path
from .fuse import fuse_bn
from .int8 import int8_runner, torchao_available
from .onnx import onnx_file, onnx_runner, onnxruntime_available

Runner = Callable[[torch.Tensor], torch.Tensor]
MODES = ("eager", "channels_last", "fused", "bf16", "compile", "compile_bf16", "onnxruntime", "int8", "compile_int8")
ONNX_MODES = ("onnxruntime", "int8")  # exported to ONNX: they need an example input (int8: calibration images)
# The number format each mode computes in: the matmul peak its speed is a share of, the bytes a weight costs.
NUMBER_FORMAT = {"eager": "float32", "channels_last": "float32", "fused": "float32", "compile": "float32",
                 "onnxruntime": "float32", "bf16": "bfloat16", "compile_bf16": "bfloat16", "int8": "int8",
                 "compile_int8": "int8"}
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
INT8_MODES = tuple(m for m, f in NUMBER_FORMAT.items() if f == "int8")  # calibrated on the example input
EXAMPLE_MODES = (*ONNX_MODES, "compile_int8")  # the modes that need an example input
# The largest relative difference from float32 eager that each number format allows (max |dy| / max |y|).
TOLERANCE = {"eager": 0.0, "channels_last": 1e-4, "fused": 1e-4, "compile": 1e-4, "onnxruntime": 1e-4,
             "bf16": 5e-2, "compile_bf16": 5e-2, "int8": 1e-1, "compile_int8": 1e-1}
COMPILED_TWIN = {"bf16": "compile_bf16", "fused": "compile"}  # the same numbers, compiled ahead of time
# Seconds of work in the plain mode above which compiling its twin pays: compiling costs 5-20 s once on 2 cores
# (then the package is cached) and the twin runs 1.3-2x as fast, so past about 3x the compile time it is ahead.
COMPILE_PAYS_AFTER_S = 30.0
TF32_TOLERANCE = 1e-2  # float32 modes on CUDA: cuDNN convolutions round their inputs to TF32 by default
# An int8 network may change the top-1 class of at most this share of its calibration images (checked on up
# to AGREEMENT_IMAGES of them): more says the network's margins are too small for 8 bits (a network trained
# briefly, or one whose logits are large beside the gaps between them), whatever the CPU.
INT8_MAX_MOVED = 0.03
AGREEMENT_IMAGES = 64

log = logging.getLogger("resnets")


def tolerance(mode: str, device: torch.device | str = "cpu") -> float:
    """The largest relative difference from float32 eager that ``mode`` may show on ``device``."""
    if torch.device(device).type == "cuda" and 0 < TOLERANCE[mode] < TF32_TOLERANCE:
        return TF32_TOLERANCE
    return TOLERANCE[mode]


def fastest_mode(device: torch.device | str = "cpu", *, float32: bool = False, model: nn.Module | None = None,
                 shape: tuple[int, ...] | None = None, images: float = 0) -> str:
    """The fastest inference mode on ``device`` whose numbers agree with float32 within its number format, and
    that compiles nothing now unless the work ahead pays for it: bfloat16 where it is native (unless
    ``float32``: then the numbers are float32's to about 1e-6), else ONNX Runtime's float32 where it runs (as
    fast as folded PyTorch or faster, up to 1.6x, in every configuration of the speed suite on an AVX-512 and
    an AVX2 CPU), else batch norm folded into float32 convolutions. The ONNX export costs about a second
    (ResNet-20) to a few (ResNet-50) once: it pays off over a few hundred to a few thousand images.

    Given the ``model`` and the image ``shape`` (channels, height, width), a CPU mode whose compiled twin is
    already in the cache (``aot.py``: an earlier run in ``compile_bf16`` or ``compile`` paid the compilation)
    gives way to it: ``bf16`` to ``compile_bf16``, ``fused`` to ``compile``, faster in every row of the speed
    suite and loaded in a second or two. ONNX Runtime's float32 keeps its place: it is the faster of the two.
    ``images`` is the work ahead (``math.inf`` for a server): where the plain mode would take longer than
    ``COMPILE_PAYS_AFTER_S`` over it (timed on one batch), the twin is chosen and compiles on its first call."""
    mode = "bf16" if not float32 and native_bf16(device) else (
        "onnxruntime" if "onnxruntime" in available_modes(device, compile=False) else "fused")
    twin = COMPILED_TWIN.get(mode)
    if twin is None or model is None or shape is None or torch.device(device).type != "cpu":
        return mode
    net, dtype = _folded_net(model, twin)
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
    """The inference modes that run on ``device``: the ONNX Runtime ones on the CPU where it is installed, the
    bfloat16 ones where bfloat16 is native (or, with ``emulated_bf16``, anywhere: slow, but the same numbers),
    the compiled ones unless ``compile`` is False (PyTorch's int8 on the CPU where torchao is installed)."""
    cuda = torch.device(device).type == "cuda"
    return tuple(m for m in MODES if (compile or not m.startswith("compile"))
                 and (m not in ONNX_MODES or (onnxruntime_available() and not cuda))
                 and (m != "compile_int8" or (torchao_available() and not cuda))
                 and ("bf16" not in m or emulated_bf16 or native_bf16(device)))


def _layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _cuda_compiled(model: nn.Module) -> Runner:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants, folded into the kernels
    # CUDA graphs replay the whole forward as one launch (small batches are launch-bound).
    return torch.compile(model, mode="reduce-overhead")


def prepare_inference(model: nn.Module, mode: str, example: torch.Tensor | None = None) -> Runner:
    """A function from float32 NCHW images to float32 logits that runs ``model`` (left untouched) in ``mode``.

    ``example`` is needed by the ONNX modes and ``compile_int8``: the export traces it, and the int8 modes
    calibrate on it (give real images for real accuracy)."""
    if mode not in MODES:
        raise ConfigError(f"unknown inference mode {mode!r}; expected one of {', '.join(MODES)}")
    model = copy.deepcopy(model).eval()
    if mode == "eager":
        return _no_grad(model)
    if mode in EXAMPLE_MODES and example is None:
        raise ConfigError(f"the {mode} mode needs an example input (the export's, and int8's calibration)")
    if mode in ONNX_MODES:
        example = cast(torch.Tensor, example)  # checked above
        run = onnx_runner(onnx_file(model, example, int8=mode == "int8"))
        return check_agreement(model, run, example, mode) if mode == "int8" else run
    if mode == "channels_last":
        net = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs lack it)
        return _no_grad(lambda x: net(_layout(x)))
    net, dtype = _folded_net(model, mode)
    if mode == "compile_int8":
        if next(model.parameters()).is_cuda:
            raise ConfigError("the compile_int8 mode runs on the CPU only")
        example = cast(torch.Tensor, example)  # checked above
        return check_agreement(model, _no_grad(int8_runner(net, example)), example, mode)
    if mode.startswith("compile"):
        if not next(model.parameters()).is_cuda:
            return _no_grad(aot_runner(net, dtype))
        graph = _cuda_compiled(net)  # a CUDA graph's output is overwritten by its next replay: clone it
        return _no_grad(lambda x: graph(_layout(x.to(dtype))).float().clone())
    return _no_grad(lambda x: net(_layout(x.to(dtype))).float())


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


def _folded_net(model: nn.Module, mode: str) -> tuple[nn.Module, torch.dtype]:
    """``model`` as the fused and compiled modes run it: batch norm folded, channels_last, in their dtype."""
    dtype = torch.bfloat16 if mode in ("bf16", "compile_bf16") else torch.float32
    return fuse_bn(model).to(memory_format=torch.channels_last, dtype=dtype), dtype  # type: ignore[call-overload]


def _no_grad(fn: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return run
