"""A training checkpoint quantized to int8 ONNX (``inference.onnx.quantize_onnx``), with its accuracy and speed
measured before and after."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..data.sources import images_of
from ..engine.evaluate import calibration_images, load_checkpoint_and_data, split_of
from ..engine.predict import evaluate_split
from ..errors import ResnetsError
from ..files import atomic_write
from ..inference import onnx_runner, prepare_inference
from ..inference.onnx import quantize_onnx, set_onnx_metadata
from ..machine import int8_saturates
from ..timing import time_interleaved
from .export import checkpoint_metadata


def quantize_checkpoint(checkpoint: str | Path, out: str | Path | None = None, *, calibration: int = 512,
                        method: str = "minmax", split: str = "val", data: str | None = None,
                        data_root: str | None = None, batch_size: int = 256,
                        reduce_range: bool | None = None) -> dict[str, Any]:
    """Quantize a training checkpoint to int8 ONNX, calibrated on ``calibration`` training images
    (class-balanced), and measure top-1 on ``split`` and the speed, before (float32, batch norm folded)
    and after. Writes the model to ``out`` (default: beside the checkpoint, ``*.int8.onnx``) and the
    report to the same name with ``.json``; returns the report. ``reduce_range``: see ``quantize_onnx``."""
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
    timings = time_interleaved({name: functools.partial(run, batch) for name, run in runners.items()}, repeats=7)
    for name, run in runners.items():
        metrics = evaluate_split(run, evalset, dataset.classes, aug, split, batch_size=batch_size)
        report[name] = {"top1": round(metrics.top1, 2), "images_per_s": round(len(batch) / timings[name].median_s, 1)}
    report["top1_delta"] = round(report["int8"]["top1"] - report["float32"]["top1"], 2)
    report["speedup"] = round(report["int8"]["images_per_s"] / report["float32"]["images_per_s"], 2)
    report["size_mb"] = {"int8": round(out.stat().st_size / 2**20, 2),
                         "float32": round(sum(p.numel() for p in loaded.model.parameters()) * 4 / 2**20, 2)}
    atomic_write(out.with_suffix(".json"), lambda f: f.write(json.dumps(report, indent=2).encode() + b"\n"))
    return report
