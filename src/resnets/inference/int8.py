"""int8 in PyTorch itself: post-training static quantization for x86 (PT2E with torchao's
``X86InductorQuantizer``: int8 weights per output channel, uint8 activations whose ranges come from calibration
images), compiled ahead of time by AOTInductor and cached like the other compiled modes (``aot.py``).

On CPUs with AMX or AVX512-VNNI this is the fastest way to run a ResNet here: on a 2-core AMX CPU, ResNet-50 at
batch 16 ran 2.8x the bfloat16 default and 2.3x ONNX Runtime's int8 (``bench/int8_paths.py``). The
quantization runs only when no package is cached for the network, the image shape and the calibration images.

torchao is the maintained home of PyTorch's PT2E quantizers (they left ``torch.ao``); it is optional:
``pip install 'resnets[deploy]'``.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ResnetsError
from ..machine import int8_saturates
from .aot import MAX_BATCH, aot_runner, check_calibrated, images_digest

CALIBRATION_BATCH = 64


def torchao_available() -> bool:
    """Whether torchao (PyTorch's PT2E quantizers) is installed (found, not imported: that takes seconds)."""
    return importlib.util.find_spec("torchao") is not None


def _quantizer() -> tuple[Any, Any, Any]:
    """torchao's PT2E entry points, imported quietly (it logs missing GPU kernels and pytree notices)."""
    noisy = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [n.level for n in noisy]
    for n in noisy:
        n.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    finally:
        for n, level in zip(noisy, levels):
            n.setLevel(level)
    return prepare_pt2e, convert_pt2e, x86


def quantize_pt2e(net: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """``net`` (float32, eval mode, batch norm folded) quantized for x86 Inductor: exported, observed on
    ``calibration`` (normalised float32 images, as the network sees them), converted to int8 operations.
    Activations take 7 bits where int8 products can saturate (x86 without VNNI), as ONNX Runtime's weights do."""
    try:
        prepare_pt2e, convert_pt2e, x86 = _quantizer()
    except ImportError:
        raise ResnetsError("the compile_int8 mode needs torchao (PyTorch's quantizers): "
                           "pip install 'resnets[deploy]'") from None
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # two images (the first and last): an export at batch 1 would fix the batch size to 1
    example = calibration[[0, -1]].float().contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # strict: a module called twice (a block's ReLU) gets one partition per call, as the quantizer needs
        graph = torch.export.export(net, (example,), dynamic_shapes=({0: batch},), strict=True).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=int8_saturates()))
        prepared = prepare_pt2e(graph, quantizer)
        for chunk in calibration.split(CALIBRATION_BATCH):
            prepared(chunk.float().contiguous(memory_format=torch.channels_last))
        return convert_pt2e(prepared)


def int8_runner(net: nn.Module, calibration: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from float32 NCHW images to float32 logits running ``net`` (float32, batch norm folded)
    quantized on ``calibration`` and compiled ahead of time, for images of the calibration images' size."""
    if len(calibration) == 0:
        raise ResnetsError("int8 calibration needs at least one image")
    shape = tuple(calibration.shape[1:])
    salt = b"pt2e-x86|" + images_digest(calibration)
    run = aot_runner(net, torch.float32, salt, transform=lambda n: quantize_pt2e(n, calibration))

    def checked(x: torch.Tensor) -> torch.Tensor:
        check_calibrated("compile_int8", shape, tuple(x.shape[1:]))
        return run(x)

    return checked
