"""ONNX for any ``nn.Module``: export with a dynamic batch, metadata, an ONNX Runtime session and runner, and
post-training int8 quantization with ONNX Runtime's static flow.

int8: the model is exported, pre-processed (shape inference, batch norm folded into the convolutions),
calibrated on real images (the range of every activation), and rewritten with QuantizeLinear /
DequantizeLinear pairs: int8 weights per output channel, uint8 activations per tensor. ONNX Runtime then
runs the convolutions as integer kernels (VNNI on x86 CPUs that have it).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ResnetsError
from ..files import atomic_write
from ..machine import int8_saturates

Runner = Callable[[torch.Tensor], torch.Tensor]

def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_session(model: str | Path | bytes) -> Any:
    """An ONNX Runtime session on the CPU for a file (or serialised model), with every graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's threads busy-wait between runs by default, taking the cores from whatever runs next
    # (PyTorch, a data loader, the web server); let them sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


def onnx_runner(path: str | Path) -> Runner:
    """Run an ONNX file (input ``images``) with ONNX Runtime on the CPU, with every graph optimisation."""
    import numpy as np

    session = onnx_session(path)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0])

    return run


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` (eval mode) as ONNX with input ``images`` and output ``logits``; batch size is dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        except Exception as e:  # missing onnx package, unsupported operator, ...
            raise ResnetsError(f"ONNX export failed: {type(e).__name__}: {e}") from None
    return path


def set_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Store ``meta`` (JSON values) in an ONNX file's ``metadata_props``, one entry per key."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data = proto.SerializeToString()
    atomic_write(Path(path), lambda f: f.write(data))


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_onnx(model: nn.Module, calibration: torch.Tensor, path: str | Path, *, method: str = "minmax",
                  batch_size: int = 32, reduce_range: bool | None = None) -> Path:
    """Write an int8 ONNX model of ``model`` to ``path``, with activation ranges taken from ``calibration``
    (normalised float32 NCHW images, as the model sees them).

    ``reduce_range`` quantizes the weights to 7 bits, as ONNX Runtime advises for x86 CPUs without VNNI: their
    int8 kernels add pairs of uint8 x int8 products in 16 bits, which saturates with full-range weights (on an
    AVX2 CPU, 8-bit weights cost the shipped ResNet-20 2.8 points of top-1, 7-bit ones 0.4). None: where this
    CPU lacks VNNI (a file meant for another machine should say which)."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quant_pre_process, quantize_static)
    except ImportError:
        raise ResnetsError("int8 quantization needs ONNX Runtime: pip install 'resnets[deploy]'") from None
    if method not in CALIBRATION_METHODS:
        raise ResnetsError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    if len(calibration) == 0:
        raise ResnetsError("int8 calibration needs at least one image")
    reduce_range = int8_saturates() if reduce_range is None else reduce_range

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(calibration.split(batch_size))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.float().contiguous().numpy()}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        export_onnx(model.eval(), calibration[:1].float(), fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(staged), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[method])
        atomic_write(path, lambda f: f.write(staged.read_bytes()))
    return path


def onnx_file(model: nn.Module, example: torch.Tensor, int8: bool) -> Path:
    """``model`` as a temporary ONNX file: float32, traced on one image of ``example`` (the batch size stays
    dynamic), or int8 calibrated on all of ``example``."""
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    return quantize_onnx(model, example, path) if int8 else export_onnx(model, example[:1], path)


