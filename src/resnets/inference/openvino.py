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
import json
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
META_KEY = "resnets"  # where an exported network keeps its metadata (its rt_info)
SUBSET = 300  # NNCF's default: at most this many calibration images set the activation ranges
# How the int8 network is made: part of its cache key, so that a change of settings makes a new file
QUANTIZATION = f"nncf|performance|full-bias-correction|{SUBSET}-spread".encode()


def openvino_available() -> bool:
    """Whether OpenVINO is installed (found, not imported)."""
    return importlib.util.find_spec("openvino") is not None


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ResnetsError("this needs OpenVINO, which is not installed: pip install 'resnets[openvino]'") from None
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
        raise ResnetsError("OpenVINO's int8 needs NNCF, which is not installed: "
                           "pip install 'resnets[openvino]'") from None
    nncf.set_log_level(logging.ERROR)  # its notices
    # NNCF would read the first SUBSET images: pass SUBSET of them evenly spaced instead, so that a set ordered
    # by class (an image tree's class-balanced sample) keeps all its classes in proportion
    if len(calibration) > SUBSET:
        calibration = calibration[torch.linspace(0, len(calibration) - 1, SUBSET).round().long()]
    images = [x[None].float().numpy() for x in calibration]
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: stdout may be a JSON table
        # full bias correction: on the shipped ResNet-20 it keeps 99.1% of the CIFAR-10 test answers (fast: 98.6%)
        return nncf.quantize(model, nncf.Dataset(images), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(images), fast_bias_correction=False)


def to_openvino(net: nn.Module, shape: tuple[int, ...], calibration: torch.Tensor | None = None) -> Any:
    """``net`` (float32, eval mode) as an OpenVINO network for images of ``shape`` with any batch size, int8 by
    NNCF when ``calibration`` images are given."""
    ov = _openvino()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(net.eval(), example_input=torch.zeros(2, *shape), input=[(-1, *shape)])
        return model if calibration is None else _quantize(model, calibration)


def check_ir_name(path: Path) -> None:
    """An OpenVINO network file must be named X.xml: OpenVINO finds its weights by the name (X.bin)."""
    if path.suffix != ".xml":
        raise ResnetsError(f"an OpenVINO network is an .xml file with its weights in a .bin beside it: name it "
                           f"{path.with_suffix('.xml').name}")


def save_ir(model: Any, path: Path) -> None:
    """Write an OpenVINO network as ``path`` (.xml) and its weights beside it (.bin), atomically: the .bin
    first, then the .xml that OpenVINO reads it by, so an .xml found complete has its whole .bin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.xml")
    try:
        _openvino().save_model(model, str(partial), compress_to_fp16=False)
        os.replace(partial.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)


def set_ir_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store ``meta`` in an OpenVINO network's runtime information, each value as JSON under ``resnets``."""
    for key, value in meta.items():
        model.set_rt_info(json.dumps(value), [META_KEY, key])


def set_model_api_info(model: Any, meta: dict[str, Any]) -> bool:
    """Describe a classifier of RGB images for OpenVINO's Model API (``model_api.models.Model.create_model``),
    which reads ``model_info`` to build the preprocessing of raw images into the network and to name its answers:
    the class names (space-separated there, so spaces within a name become underscores), mean and std on the
    0-255 scale, the channels reversed (Model API takes images as OpenCV reads them, BGR), and a centre crop to
    the input's aspect ratio before the resize. Returns whether the network is such a classifier (one output of
    rank 2 and ``meta`` with three channels, classes, mean and std); nothing is written otherwise."""
    outputs = model.outputs
    if (len(outputs) != 1 or outputs[0].get_partial_shape().rank.get_length() != 2 or meta.get("in_chans") != 3
            or not {"classes", "mean", "std"} <= meta.keys()):
        return False
    info = {"model_type": "Classification", "labels": " ".join(c.replace(" ", "_") for c in meta["classes"]),
            "mean_values": " ".join(f"{255 * v:g}" for v in meta["mean"]),
            "scale_values": " ".join(f"{255 * v:g}" for v in meta["std"]),
            "reverse_input_channels": "True", "resize_type": "crop"}
    for key, value in info.items():
        model.set_rt_info(value, ["model_info", key])
    return True


def read_ir(path: str | Path) -> Any:
    """An OpenVINO network from its .xml file, with the .bin of its weights beside it."""
    weights = Path(path).with_suffix(".bin")
    if not weights.is_file():
        raise ResnetsError(f"{path} is an OpenVINO network without its weights: {weights.name} must be beside it")
    return _core().read_model(str(path))


def ir_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata ``set_ir_metadata`` stored in an OpenVINO network file (.xml)."""
    model = read_ir(path)
    if not model.has_rt_info([META_KEY]):
        return {}
    return {k: json.loads(v.astype(str)) for k, v in model.get_rt_info([META_KEY]).astype(dict).items()}


def converted_model(net: nn.Module, shape: tuple[int, ...], calibration: torch.Tensor | None = None) -> Path:
    """The OpenVINO form of ``net`` (float32, eval mode) for images of ``shape`` with any batch size, int8 when
    ``calibration`` images are given: from the cache, else converted (and quantized) now and written there."""
    salt = b"openvino|" + (b"" if calibration is None else QUANTIZATION + b"|" + images_digest(calibration))
    path = cache_dir() / "openvino" / f"{package_key(net, shape, torch.float32, salt)}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        return path
    log.info("converting the network to OpenVINO once (kept in %s)", path.parent)
    save_ir(to_openvino(net, shape, calibration), path)
    return path


def _config(precision: str, hint: str) -> dict[str, Any]:
    if precision not in PRECISIONS or hint not in HINTS:
        raise ResnetsError(f"OpenVINO runs {', '.join(PRECISIONS)} with the hints {', '.join(HINTS)}; "
                           f"got {precision} and {hint}")
    return {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "CACHE_DIR": str(cache_dir() / "openvino" / "blobs")}  # the compiled blobs, beside the networks


def openvino_runner(net: nn.Module, precision: str = "float32", hint: str = "LATENCY",
                    calibration: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from float32 NCHW images to float32 logits running ``net`` (float32, eval mode) in OpenVINO
    on the CPU, computing in ``precision`` (``float32`` or ``bfloat16``) with the performance ``hint``; int8
    when ``calibration`` images are given (then only for images of their size)."""
    config = _config(precision, hint)
    compiled: dict[tuple[int, ...], Any] = {}

    def compile_for(shape: tuple[int, ...]) -> Any:
        if shape not in compiled:
            if calibration is not None:
                check_calibrated("openvino_int8", tuple(calibration.shape[1:]), shape)
            compiled[shape] = _core().compile_model(read_ir(converted_model(net, shape, calibration)), "CPU", config)
        return compiled[shape]

    return _runner(compile_for, hint)


def ir_runner(path: str | Path, precision: str = "float32",
              hint: str = "LATENCY") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from float32 NCHW images to float32 logits running an OpenVINO network file (.xml) on the
    CPU, computing in ``precision`` with the performance ``hint`` (int8 where the file is quantized)."""
    compiled = _core().compile_model(read_ir(path), "CPU", _config(precision, hint))
    return _runner(lambda shape: compiled, hint)


def _runner(compile_for: Callable[[tuple[int, ...]], Any], hint: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Calls of the network that ``compile_for`` gives for an image shape, one at a time (a compiled model's
    own request serves one call at a time), a batch split among OpenVINO's streams with ``THROUGHPUT``."""
    ov = _openvino()
    lock = threading.Lock()

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
