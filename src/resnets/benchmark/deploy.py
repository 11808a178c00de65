"""``resnets bench deploy``: what each way of shipping a network costs and gains, every figure measured in the
same run: parameters, MACs, file size, latency at batch 1, throughput at batch 16 and 64, and top-1 where a
trained checkpoint is given.

Rows: each architecture (ResNet-20/56 at 32 px, ResNet-18/50 at 224 px) whole and with 30% and 50% of its
inner channels removed, widths rounded to multiples of 8 (the architecture ``resnets prune --multiple 8`` leaves;
speed does not depend on the weights), and
each given checkpoint (a trained, pruned or distilled network: its own architecture, with its test accuracy),
in every number format the processor runs: float32 (the fastest float32 mode), bfloat16 (where native; eager,
and compiled ahead of time unless ``compile`` is off) and int8 (ONNX Runtime, and PyTorch's x86 path compiled
ahead of time where torchao is installed; per-channel weights, calibrated on the checkpoint's training images,
or on random images for the speed-only rows). A compiled mode's compilation is paid before the timing starts.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..inference import available_modes, fastest_mode, get_mode, prepare_inference
from ..inference.onnx import onnx_file, onnx_runner
from ..models import create_classifier
from ..models.channels import inner_channels, kept_width, narrow
from ..models.profile import profile_model
from ..timing import time_interleaved

ARCHITECTURES = (("resnet20", 32), ("resnet56", 32), ("resnet18", 224), ("resnet50", 224))
PRUNED = (0.3, 0.5)
MULTIPLE = 8  # the pruned rows keep multiples of 8 channels, as `resnets prune --multiple 8` does
BATCHES = (1, 16, 64)


@dataclass
class DeployRow:
    network: str  # "resnet56", "resnet56 pruned 50%" or a checkpoint's label
    input_size: int
    precision: str  # the number format: float32, bfloat16 or int8
    mode: str  # the inference mode that runs it
    params: int
    macs: int
    file_mb: float
    latency_ms: float  # batch 1, median
    images_per_s: dict[str, float] = field(default_factory=dict)  # by batch size ("16"), median
    top1: float | None = None
    split: str | None = None


def thinner(model: nn.Module, amount: float, multiple: int = 1) -> nn.Module:
    """``model`` with ``amount`` of every block's inner channels removed, in place (the first ones kept; each
    run's count rounded to ``multiple``, as ``resnets prune --multiple`` does)."""
    return narrow(model, {k: kept_width(r.width * (1 - amount), r.width, multiple)
                          for k, r in inner_channels(model).items()})


def precisions(compile: bool = True) -> list[tuple[str, str]]:
    """(number format, inference mode) pairs this processor runs; the compiled ones unless ``compile`` is off."""
    runs = available_modes(compile=compile)
    modes = [fastest_mode(float32=True)] + [m for m in ("bf16", "compile_bf16", "openvino_bf16", "int8", "compile_int8",
                                                        "openvino_int8") if m in runs]
    return [(get_mode(m).number_format, m) for m in dict.fromkeys(modes)]


def _runner(model: nn.Module, mode: str, example: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The runner of ``model`` in ``mode`` (its first call made: a compiled mode compiles) and the size of the file
    it would ship as (bytes: the ONNX file, else the weights in the mode's number format)."""
    record = get_mode(mode)
    if record.engine == "onnxruntime":  # what ships is the ONNX file
        path = onnx_file(model, example, int8=record.number_format == "int8")
        return onnx_runner(path), path.stat().st_size
    runner = prepare_inference(model, mode, example)
    runner(example[:1])
    return runner, record.weight_bytes * sum(p.numel() for p in model.parameters())


def measure(network: str, model: nn.Module, size: int, example: torch.Tensor, repeats: int,
            accuracy: Callable[[Callable[[torch.Tensor], torch.Tensor]], tuple[float, str]] | None = None,
            batches: Sequence[int] = BATCHES, compile: bool = True) -> list[DeployRow]:
    """One row per (number format, mode) for ``model``: its size, its speed at each batch size (the modes timed
    in turns) and, with ``accuracy``, its top-1."""
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    macs = sum(r.macs for r in profile_model(model, size))
    formats = dict((mode, p) for p, mode in precisions(compile))
    runners = {mode: _runner(model, mode, example) for mode in formats}
    rows = {mode: DeployRow(network, size, p, mode, params, macs, round(runners[mode][1] / 1e6, 3), 0.0)
            for mode, p in formats.items()}
    for batch in batches:
        x = torch.randn(batch, example.shape[1], size, size)
        timing = time_interleaved({m: partial(r, x) for m, (r, _) in runners.items()}, repeats)
        for m, t in timing.items():
            rows[m].images_per_s[str(batch)] = round(batch / t.median_s, 1)
            if batch == 1:
                rows[m].latency_ms = round(1e3 * t.median_s, 2)
    if accuracy is not None:
        for m, (r, _) in runners.items():
            rows[m].top1, rows[m].split = accuracy(r)
    return list(rows.values())


def _checkpoint_rows(label: str, loaded: Any, repeats: int, batches: Sequence[int], compile: bool
                     ) -> list[DeployRow]:
    """The rows of one checkpoint (``loaded``: its ``CheckpointData``), with its accuracy."""
    from ..engine.evaluate import calibration_images
    from ..engine.predict import evaluate_split

    split = "test" if loaded.dataset.test is not None and len(loaded.dataset.test) else "val"

    def accuracy(runner: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, str]:
        data = getattr(loaded.dataset, split)
        return round(evaluate_split(runner, data, loaded.dataset.classes, loaded.aug, split).top1, 2), split

    size = loaded.checkpoint.get("crop_size") or loaded.checkpoint["image_size"]
    return measure(label, loaded.model, size, calibration_images(loaded), repeats, accuracy, batches, compile)


def deploy_table(checkpoints: dict[str, str] | None = None, *, quick: bool = False, compile: bool = True,
                 log: Callable[[str], None] = print, data: str | None = None,
                 data_root: str | None = None) -> dict[str, Any]:
    """The whole table: the architectures whole and pruned (speed only), then each of ``checkpoints``
    (label -> file), with accuracy on its own data or on ``data``. ``quick``: ResNet-20 only, batches 1 and 16,
    few repeats. ``compile``: the modes compiled ahead of time too (each compiles once per network, seconds to a
    minute)."""
    from dataclasses import asdict

    from ..machine import machine_info

    from ..engine.evaluate import load_checkpoint_and_data

    repeats, batches = (3, (1, 16)) if quick else (7, BATCHES)
    # every checkpoint and its data read before any measuring: a bad one is refused before minutes of work
    loaded = {label: load_checkpoint_and_data(path, data, data_root) for label, path in (checkpoints or {}).items()}
    rows: list[DeployRow] = []
    for name, size in ARCHITECTURES[:1] if quick else ARCHITECTURES:
        whole = create_classifier(name).eval()
        example = torch.randn(32, 3, size, size)
        for amount in (0.0, *PRUNED):
            model = thinner(copy.deepcopy(whole), amount, MULTIPLE) if amount else whole
            label = f"{name} pruned {amount:.0%}" if amount else name
            rows += measure(label, model, size, example, repeats, batches=batches, compile=compile)
            log(format_rows(rows[-len(precisions(compile)):]))
    for label, checkpoint in loaded.items():
        rows += _checkpoint_rows(label, checkpoint, repeats, batches, compile)
        log(format_rows(rows[-len(precisions(compile)):]))
    return {"machine": machine_info(), "batches": list(batches), "repeats": repeats, "compile": compile,
            "rows": [asdict(r) for r in rows]}


def format_rows(rows: Sequence[DeployRow]) -> str:
    lines = []
    for r in rows:
        speed = "  ".join(f"b{b} {v:8.1f} img/s" for b, v in r.images_per_s.items())
        top1 = f"  top-1 {r.top1:.2f}% ({r.split})" if r.top1 is not None else ""
        lines.append(f"{r.network:<24} {r.precision:<8} {r.mode:<12} {r.params / 1e6:6.2f} M params "
                     f"{r.macs / 1e6:9.1f} M MACs "
                     f"{r.file_mb:7.2f} MB  latency {r.latency_ms:7.2f} ms  {speed}{top1}")
    return "\n".join(lines)


def plot_deploy(table: dict[str, Any], path: Path) -> Path:
    """Throughput at the largest batch against top-1 for the rows with an accuracy (one marker per number
    format, one colour per network); the speed-only rows as a bar chart of throughput."""
    from ..plots import plt, save_figure

    rows = table["rows"]
    batch = str(max(table["batches"]))
    markers = {"bf16": "s", "compile_bf16": "D", "int8": "^", "compile_int8": "v"}  # float32 modes: "o"
    speed_only = [r for r in rows if r["top1"] is None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.15 * len(speed_only))),
                                      gridspec_kw={"width_ratios": [1.2, 1]})
    trained = [r for r in rows if r["top1"] is not None]
    colours = {n: f"C{i}" for i, n in enumerate(dict.fromkeys(r["network"] for r in trained))}
    for r in trained:
        left.scatter(r["images_per_s"][batch], r["top1"], marker=markers.get(r["mode"], "o"),
                     color=colours[r["network"]], s=60, label=f"{r['network']} {r['mode']}")
    left.set(xlabel=f"images/s at batch {batch}", ylabel="top-1 (%)", title="trained networks")
    left.grid(alpha=0.3)
    if trained:
        left.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))  # below: never on a point
    labels = [f"{r['network']} {r['mode']}" for r in speed_only]
    right.barh(labels, [r["images_per_s"][batch] for r in speed_only],
               color=[{"float32": "#4c72b0", "bfloat16": "#55a868", "int8": "#c44e52"}[r["precision"]]
                      for r in speed_only])
    right.set(xlabel=f"images/s at batch {batch}", xscale="log", title="architectures (speed only)")
    right.tick_params(axis="y", labelsize=6)
    right.invert_yaxis()
    return save_figure(fig, path)
