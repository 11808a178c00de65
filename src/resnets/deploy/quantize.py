"""Post-training int8 quantization with ONNX Runtime's static flow.

The model is exported to ONNX, pre-processed (shape inference, batch norm folded into the convolutions),
calibrated on real images (the range of every activation), and rewritten with QuantizeLinear /
DequantizeLinear pairs: int8 weights per output channel, uint8 activations per tensor. ONNX Runtime then
runs the convolutions as integer kernels (VNNI on x86 CPUs that have it).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..data.sources import images_of
from ..errors import ResnetsError
from ..files import atomic_write
from ..machine import int8_saturates
from .export import checkpoint_metadata, export_onnx, set_onnx_metadata

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


def quantize_checkpoint(checkpoint: str | Path, out: str | Path | None = None, *, calibration: int = 512,
                        method: str = "minmax", split: str = "val", data: str | None = None,
                        data_root: str | None = None, batch_size: int = 256,
                        reduce_range: bool | None = None) -> dict[str, Any]:
    """Quantize a training checkpoint to int8 ONNX, calibrated on ``calibration`` training images
    (class-balanced), and measure top-1 on ``split`` and the speed, before (float32, batch norm folded)
    and after. Writes the model to ``out`` (default: beside the checkpoint, ``*.int8.onnx``) and the
    report to the same name with ``.json``; returns the report. ``reduce_range``: see ``quantize_onnx``."""
    from ..bench import time_interleaved
    from ..engine.evaluate import calibration_images, load_checkpoint_and_data, split_of
    from ..engine.train import evaluate_split
    from .inference import onnx_runner, prepare_inference

    if calibration < 1:
        raise ResnetsError(f"--calibration must be at least 1 image, got {calibration}")
    loaded = load_checkpoint_and_data(checkpoint, data, data_root)
    dataset, aug = loaded.dataset, loaded.aug
    evalset = split_of(dataset, split)
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(".int8.onnx")
    calib = calibration_images(loaded, calibration)
    reduce_range = int8_saturates() if reduce_range is None else reduce_range
    quantize_onnx(loaded.model, calib, out, method=method, reduce_range=reduce_range)
    weights = "7-bit weights" if reduce_range else "8-bit weights"
    set_onnx_metadata(out, {**checkpoint_metadata(loaded.checkpoint),
                            "quantization": f"int8 static, {method}, {weights}"})

    runners = {"float32": prepare_inference(loaded.model, "fused"), "int8": onnx_runner(out)}
    batch = aug.eval(images_of(evalset, batch_size))
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "out": str(out), "method": method, "weights": weights,
                              "calibration_images": len(calib), "split": split, "images": len(evalset)}
    timings = time_interleaved({name: (lambda r=run: r(batch)) for name, run in runners.items()}, repeats=7)
    for name, run in runners.items():
        metrics = evaluate_split(run, evalset, dataset.classes, aug, split, batch_size=batch_size)
        report[name] = {"top1": round(metrics.top1, 2), "images_per_s": round(len(batch) / timings[name].median_s, 1)}
    report["top1_delta"] = round(report["int8"]["top1"] - report["float32"]["top1"], 2)
    report["speedup"] = round(report["int8"]["images_per_s"] / report["float32"]["images_per_s"], 2)
    report["size_mb"] = {"int8": round(out.stat().st_size / 2**20, 2),
                         "float32": round(sum(p.numel() for p in loaded.model.parameters()) * 4 / 2**20, 2)}
    atomic_write(out.with_suffix(".json"), lambda f: f.write(json.dumps(report, indent=2).encode() + b"\n"))
    return report
