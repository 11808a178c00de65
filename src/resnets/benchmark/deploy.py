"""``resnets bench deploy``: what each way of shipping a network costs and gains, every figure measured in the
same run: parameters, MACs, file size, latency at batch 1, throughput at batch 16 and 64, and top-1 where a
trained checkpoint is given.

Rows: each architecture (ResNet-20/56 at 32 px, ResNet-18/50 at 224 px) whole and with 30% and 50% of its
inner channels removed (the architecture ``resnets prune`` leaves; speed does not depend on the weights), and
each given checkpoint (a trained, pruned or distilled network: its own architecture, with its test accuracy),
in every number format the processor runs: float32 (the fastest float32 mode), bfloat16 (where native) and
int8 (ONNX Runtime, per-channel weights, calibrated on the checkpoint's training images, or on random images
for the speed-only rows).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..inference import fastest_mode, onnxruntime_available, prepare_inference
from ..inference.onnx import onnx_file, onnx_runner
from ..machine import native_bf16
from ..models import create_model
from ..models.channels import inner_channels, kept_width, narrow
from ..models.profile import profile_model
from ..timing import time_interleaved

ARCHITECTURES = (("resnet20", 32), ("resnet56", 32), ("resnet18", 224), ("resnet50", 224))
PRUNED = (0.3, 0.5)
BATCHES = (1, 16, 64)


@dataclass
class DeployRow:
    network: str  # "resnet56", "resnet56 pruned 50%" or a checkpoint's label
    input_size: int
    precision: str  # float32, bfloat16 or int8
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


def precisions() -> list[tuple[str, str]]:
    """(number format, inference mode) pairs this processor runs."""
    found = [("float32", fastest_mode(float32=True))]
    if native_bf16("cpu"):
        found.append(("bfloat16", "bf16"))
    if onnxruntime_available():
        found.append(("int8", "int8"))
    return found


def _runner(model: nn.Module, mode: str, example: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The runner of ``model`` in ``mode`` and the size of the file it would ship as (bytes)."""
    if mode in ("int8", "onnxruntime"):
        path = onnx_file(model, example, int8=mode == "int8")
        return onnx_runner(path), path.stat().st_size
    per_value = 2 if mode in ("bf16", "compile_bf16") else 4
    return prepare_inference(model, mode), per_value * sum(p.numel() for p in model.parameters())


def measure(network: str, model: nn.Module, size: int, example: torch.Tensor, repeats: int,
            accuracy: Callable[[Callable[[torch.Tensor], torch.Tensor]], tuple[float, str]] | None = None,
            batches: Sequence[int] = BATCHES) -> list[DeployRow]:
    """One row per number format for ``model``: its size, its speed at each batch size (the formats timed in
    turns) and, with ``accuracy``, its top-1."""
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    macs = sum(r.macs for r in profile_model(model, size))
    runners = {p: _runner(model, mode, example) for p, mode in precisions()}
    rows = {p: DeployRow(network, size, p, mode, params, macs, round(runners[p][1] / 1e6, 3), 0.0)
            for p, mode in precisions()}
    for batch in batches:
        x = torch.randn(batch, model.in_chans, size, size)
        timing = time_interleaved({p: (lambda r=r: r(x)) for p, (r, _) in runners.items()}, repeats)
        for p, t in timing.items():
            rows[p].images_per_s[str(batch)] = round(batch / t.median_s, 1)
            if batch == 1:
                rows[p].latency_ms = round(1e3 * t.median_s, 2)
    if accuracy is not None:
        for p, (r, _) in runners.items():
            rows[p].top1, rows[p].split = accuracy(r)
    return list(rows.values())


def _checkpoint_rows(label: str, path: str | Path, repeats: int, batches: Sequence[int]) -> list[DeployRow]:
    from ..engine.evaluate import calibration_images, load_checkpoint_and_data
    from ..engine.predict import evaluate_split

    loaded = load_checkpoint_and_data(path)
    split = "test" if loaded.dataset.test is not None and len(loaded.dataset.test) else "val"

    def accuracy(runner: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, str]:
        data = getattr(loaded.dataset, split)
        return round(evaluate_split(runner, data, loaded.dataset.classes, loaded.aug, split).top1, 2), split

    size = loaded.checkpoint.get("crop_size") or loaded.checkpoint["image_size"]
    return measure(label, loaded.model, size, calibration_images(loaded), repeats, accuracy, batches)


def deploy_table(checkpoints: dict[str, str] | None = None, *, quick: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole table: the architectures whole and pruned (speed only), then each of ``checkpoints``
    (label -> file), with accuracy. ``quick``: ResNet-20 only, batches 1 and 16, few repeats."""
    from dataclasses import asdict

    from ..machine import machine_info

    repeats, batches = (3, (1, 16)) if quick else (7, BATCHES)
    rows: list[DeployRow] = []
    for name, size in ARCHITECTURES[:1] if quick else ARCHITECTURES:
        whole = create_model(name).eval()
        example = torch.randn(32, 3, size, size)
        for amount in (0.0, *PRUNED):
            model = thinner(copy.deepcopy(whole), amount) if amount else whole
            label = f"{name} pruned {amount:.0%}" if amount else name
            rows += measure(label, model, size, example, repeats, batches=batches)
            log(format_rows(rows[-len(precisions()):]))
    for label, path in (checkpoints or {}).items():
        rows += _checkpoint_rows(label, path, repeats, batches)
        log(format_rows(rows[-len(precisions()):]))
    return {"machine": machine_info(), "batches": list(batches), "repeats": repeats,
            "rows": [asdict(r) for r in rows]}


def format_rows(rows: Sequence[DeployRow]) -> str:
    lines = []
    for r in rows:
        speed = "  ".join(f"b{b} {v:8.1f} img/s" for b, v in r.images_per_s.items())
        top1 = f"  top-1 {r.top1:.2f}% ({r.split})" if r.top1 is not None else ""
        lines.append(f"{r.network:<24} {r.precision:<8} {r.params / 1e6:6.2f} M params {r.macs / 1e6:9.1f} M MACs "
                     f"{r.file_mb:7.2f} MB  latency {r.latency_ms:7.2f} ms  {speed}{top1}")
    return "\n".join(lines)


def plot_deploy(table: dict[str, Any], path: Path) -> Path:
    """Throughput at the largest batch against top-1 for the rows with an accuracy (one marker per number
    format, one colour per network); the speed-only rows as a bar chart of throughput."""
    from ..plots import plt, save_figure

    rows = table["rows"]
    batch = str(max(table["batches"]))
    markers = {"float32": "o", "bfloat16": "s", "int8": "^"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    trained = [r for r in rows if r["top1"] is not None]
    colours = {n: f"C{i}" for i, n in enumerate(dict.fromkeys(r["network"] for r in trained))}
    for r in trained:
        left.scatter(r["images_per_s"][batch], r["top1"], marker=markers[r["precision"]], color=colours[r["network"]],
                     s=60, label=f"{r['network']} {r['precision']}")
    left.set(xlabel=f"images/s at batch {batch}", ylabel="top-1 (%)", title="trained networks")
    left.grid(alpha=0.3)
    if trained:
        left.legend(fontsize=7)
    speed_only = [r for r in rows if r["top1"] is None]
    labels = [f"{r['network']} {r['precision']}" for r in speed_only]
    right.barh(labels, [r["images_per_s"][batch] for r in speed_only],
               color=[{"float32": "#4c72b0", "bfloat16": "#55a868", "int8": "#c44e52"}[r["precision"]]
                      for r in speed_only])
    right.set(xlabel=f"images/s at batch {batch}", xscale="log", title="architectures (speed only)")
    right.tick_params(axis="y", labelsize=6)
    right.invert_yaxis()
    return save_figure(fig, path)
