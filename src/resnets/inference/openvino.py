"""OpenVINO, Intel's inference engine for CPUs, as a backend of the inference modes: the network converted once
to OpenVINO's form (float32, or int8 by NNCF's post-training quantization on calibration images), kept on disk
like the AOTInductor packages (``aot.py``), and compiled for this CPU with a precision hint (float32 or
bfloat16) and a performance hint: ``LATENCY`` (one stream, every core on each call) or ``THROUGHPUT`` (several
streams, a batch split among them).

The converted network is kept under ``cache_dir()/openvino``, named by the same digest as the compiled
packages (network, weights, image shape, calibration images, versions and CPU); OpenVINO keeps its compiled
blobs for this CPU beside it, so a second run loads in well under a second.

OpenVINO and NNCF are optional: ``pip install 'resnets[openvino]'``.
"""
from __future__ import annotations

import contextlib
import functools
import io
import importlib.util
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ResnetsError
from ..files import cache_dir
from .aot import check_calibrated, images_digest, package_key

log = logging.getLogger("resnets")
HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
SUBSET = 300  # NNCF's default: at most this many calibration images set the activation ranges
# How the int8 network is made: part of its cache key, so that a change of settings makes a new file
QUANTIZATION = f"nncf|performance|full-bias-correction|{SUBSET}".encode()


def openvino_available() -> bool:
    """Whether OpenVINO is installed (found, not imported)."""
    return importlib.util.find_spec("openvino") is not None


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ResnetsError("the openvino modes need OpenVINO: pip install 'resnets[openvino]'") from None
    return openvino


@functools.cache
def _core() -> Any:
    """One OpenVINO runtime for the process, kept to its end: a runtime destroyed while its worker threads and
    compiled networks live on crashed the process at random later moments (seen in a test session)."""
    return _openvino().Core()


def _quantize(model: Any, calibration: torch.Tensor) -> Any:
    """``model`` (an OpenVINO float32 network) quantized to int8 by NNCF on ``calibration``."""
    try:
        import nncf
    except ImportError:
        raise ResnetsError("the openvino_int8 mode needs NNCF: pip install 'resnets[openvino]'") from None
    nncf.set_log_level(logging.ERROR)  # its notices
    images = [x[None].float().numpy() for x in calibration]
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: stdout may be a JSON table
        # full bias correction: on the shipped ResNet-20 it keeps 99.1% of the CIFAR-10 test answers (fast: 98.6%)
        return nncf.quantize(model, nncf.Dataset(images), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=min(len(images), SUBSET), fast_bias_correction=False)


def converted_model(net: nn.Module, shape: tuple[int, ...], calibration: torch.Tensor | None = None) -> Path:
    """The OpenVINO form of ``net`` (float32, eval mode) for images of ``shape`` with any batch size, int8 when
    ``calibration`` images are given: from the cache, else converted (and quantized) now and written there."""
    salt = b"openvino|" + (b"" if calibration is None else QUANTIZATION + b"|" + images_digest(calibration))
    path = cache_dir() / "openvino" / f"{package_key(net, shape, torch.float32, salt)}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        return path
    ov = _openvino()
    log.info("converting the network to OpenVINO once (kept in %s)", path.parent)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(net.eval(), example_input=torch.zeros(2, *shape),
                                 input=[(-1, *shape)])
        if calibration is not None:
            model = _quantize(model, calibration)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.xml")
    try:  # the .bin first, then the .xml that names it: a file found complete is whole
        ov.save_model(model, str(partial), compress_to_fp16=False)
        os.replace(partial.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)
    return path


def openvino_runner(net: nn.Module, precision: str = "float32", hint: str = "LATENCY",
                    calibration: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from float32 NCHW images to float32 logits running ``net`` (float32, eval mode) in OpenVINO
    on the CPU, computing in ``precision`` (``float32`` or ``bfloat16``) with the performance ``hint``; int8
    when ``calibration`` images are given (then only for images of their size)."""
    if precision not in PRECISIONS or hint not in HINTS:
        raise ResnetsError(f"OpenVINO runs {', '.join(PRECISIONS)} with the hints {', '.join(HINTS)}; "
                           f"got {precision} and {hint}")
    ov = _openvino()
    core = _core()
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
              "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "CACHE_DIR": str(cache_dir() / "openvino" / "blobs")}  # the compiled blobs, beside the networks
    compiled: dict[tuple[int, ...], Any] = {}
    lock = threading.Lock()  # a compiled model's own request serves one call at a time

    def compile_for(shape: tuple[int, ...]) -> Any:
        if shape not in compiled:
            if calibration is not None:
                check_calibrated("openvino_int8", tuple(calibration.shape[1:]), shape)
            model = core.read_model(str(converted_model(net, shape, calibration)))
            compiled[shape] = core.compile_model(model, "CPU", config)
        return compiled[shape]

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().float().contiguous()
        with lock:
            model = compile_for(tuple(x.shape[1:]))
            streams = model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if hint == "THROUGHPUT" else 1
            if streams <= 1 or len(x) < 2:
                return torch.from_numpy(model(x.numpy())[0].copy())
        return _in_streams(ov, model, x, streams)

    return run


def _in_streams(ov: Any, model: Any, x: torch.Tensor, streams: int) -> torch.Tensor:
    """``x`` split among ``streams`` asynchronous requests of ``model``, the answers joined in order."""
    chunks = x.tensor_split(min(streams, len(x)))
    out: list[Any] = [None] * len(chunks)
    queue = ov.AsyncInferQueue(model, len(chunks))

    def done(request: Any, i: int) -> None:
        out[i] = request.get_output_tensor(0).data.copy()

    queue.set_callback(done)
    for i, chunk in enumerate(chunks):
        queue.start_async(chunk.numpy(), userdata=i)
    queue.wait_all()
    return torch.cat([torch.from_numpy(o) for o in out])
