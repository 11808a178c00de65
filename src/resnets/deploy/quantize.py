"""A training checkpoint quantized to int8, as an ONNX file (ONNX Runtime's static quantization,
``inference.onnx.quantize_onnx``) or an OpenVINO network (NNCF's, ``inference.openvino``), with its accuracy and
speed measured before and after."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.sources import images_of
from ..engine.evaluate import calibration_images, load_checkpoint_and_data, split_of
from ..engine.predict import evaluate_split
from ..errors import ResnetsError
from ..files import atomic_write
from ..inference import onnx_runner, prepare_inference
from ..inference.modes import Runner
from ..inference.onnx import quantize_onnx, set_onnx_metadata
from ..inference.openvino import (SUBSET, check_ir_name, ir_runner, save_ir, set_ir_metadata, set_model_api_info,
                                  to_openvino)
from ..machine import int8_saturates
from ..timing import time_interleaved
from .export import checkpoint_metadata, exported_bytes


ENGINES = ("onnxruntime", "openvino")
SUFFIX = {"onnxruntime": ".int8.onnx", "openvino": ".int8.xml"}
# the report beside the file: X.int8.json and X.int8.xml.json, so that quantizing for both engines keeps both
REPORT_SUFFIX = {"onnxruntime": ".json", "openvino": ".xml.json"}


def quantize_checkpoint(checkpoint: str | Path, out: str | Path | None = None, *, calibration: int = 512,
                        method: str | None = None, split: str = "val", data: str | None = None,
                        data_root: str | None = None, batch_size: int = 256,
                        reduce_range: bool | None = None, engine: str = "onnxruntime") -> dict[str, Any]:
    """Quantize a training checkpoint to int8 for ``engine``, calibrated on ``calibration`` training images
    (class-balanced), and measure top-1 on ``split`` and the speed, before (float32: batch norm folded in
    PyTorch for ONNX Runtime, OpenVINO's float32 for OpenVINO) and after. Writes the model to ``out`` (default:
    beside the checkpoint, ``*.int8.onnx`` or ``*.int8.xml``) and the report beside it (``*.int8.json``,
    ``*.int8.xml.json``);
    returns the report. ``method`` and ``reduce_range`` (see ``quantize_onnx``) choose ONNX Runtime's
    calibration; OpenVINO's is NNCF's (``inference.openvino``)."""
    if calibration < 1:
        raise ResnetsError(f"--calibration must be at least 1 image, got {calibration}")
    if engine not in ENGINES:
        raise ResnetsError(f"unknown int8 engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "openvino" and (method is not None or reduce_range is not None):
        raise ResnetsError("--method and --reduce-range choose ONNX Runtime's calibration; OpenVINO's int8 is "
                           "calibrated by NNCF: leave them out with --engine openvino")
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(SUFFIX[engine])
    if engine == "openvino":
        check_ir_name(out)
    loaded = load_checkpoint_and_data(checkpoint, data, data_root)
    evalset = split_of(loaded.dataset, split)
    calib = calibration_images(loaded, calibration)
    meta = checkpoint_metadata(loaded.checkpoint)
    if engine == "openvino":
        report, runners = _openvino_int8(loaded.model, calib, out, meta)
    else:
        report, runners = _onnx_int8(loaded.model, calib, out, meta, method or "minmax", reduce_range)
    report = {"checkpoint": str(checkpoint), "out": str(out), "engine": engine, **report,
              "calibration_images": len(calib), "split": split, "images": len(evalset)}
    batch = loaded.aug.eval(images_of(evalset, batch_size))
    timings = time_interleaved({name: functools.partial(run, batch) for name, run in runners.items()}, repeats=7)
    for name, run in runners.items():
        metrics = evaluate_split(run, evalset, loaded.dataset.classes, loaded.aug, split, batch_size=batch_size)
        report[name] = {"top1": round(metrics.top1, 2), "images_per_s": round(len(batch) / timings[name].median_s, 1)}
    report["top1_delta"] = round(report["int8"]["top1"] - report["float32"]["top1"], 2)
    report["speedup"] = round(report["int8"]["images_per_s"] / report["float32"]["images_per_s"], 2)
    report["size_mb"] = {"int8": round(exported_bytes(out) / 2**20, 2),
                         "float32": round(sum(p.numel() for p in loaded.model.parameters()) * 4 / 2**20, 2)}
    text = json.dumps(report, indent=2).encode() + b"\n"
    atomic_write(out.with_suffix(REPORT_SUFFIX[engine]), lambda f: f.write(text))
    return report


def _onnx_int8(model: nn.Module, calib: torch.Tensor, out: Path, meta: dict[str, Any], method: str,
               reduce_range: bool | None) -> tuple[dict[str, Any], dict[str, Runner]]:
    """ONNX Runtime's static int8 file of ``model`` at ``out``: what the report says of it, and the runners
    to compare (PyTorch float32 with batch norm folded, the int8 file)."""
    reduce_range = int8_saturates() if reduce_range is None else reduce_range
    quantize_onnx(model, calib, out, method=method, reduce_range=reduce_range)
    weights = "7-bit weights" if reduce_range else "8-bit weights"
    set_onnx_metadata(out, {**meta, "quantization": f"int8 static, {method}, {weights}"})
    return ({"method": method, "weights": weights},
            {"float32": prepare_inference(model, "fused"), "int8": onnx_runner(out)})


def _openvino_int8(model: nn.Module, calib: torch.Tensor, out: Path,
                   meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Runner]]:
    """OpenVINO's int8 network of ``model`` (NNCF's post-training quantization) at ``out`` (.xml, weights in
    the .bin beside it): what the report says of it, and the runners to compare (OpenVINO float32, int8)."""
    ir = to_openvino(model, tuple(calib.shape[1:]), calib)
    method = f"NNCF, performance preset, full bias correction, {min(len(calib), SUBSET)} images"
    set_ir_metadata(ir, {**meta, "quantization": f"int8 static, {method}"})
    set_model_api_info(ir, meta)
    save_ir(ir, out)
    return ({"method": method, "weights": "8-bit weights"},
            {"float32": prepare_inference(model, "openvino"), "int8": ir_runner(out)})
