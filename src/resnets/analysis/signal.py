"""Signal propagation at initialisation (Brock, De and Smith 2021, "signal propagation plots"; De and Smith 2020,
SkipInit): how the variance of the residual stream and the gradient reaching each block change with depth, for
plain and residual stacks, with and without batch norm, and with residual branches that start at zero.

Each network is a stem convolution and ``depth`` blocks of constant width on a fixed input (Gaussian images, or
real ones), He-initialised as the zoo's networks are, then read by a linear classifier with a cross-entropy loss
on fixed random labels. For every block output ``x_l`` (the stream): the mean over channels of the variance over
the batch and positions, the mean over channels of the squared mean, and the norm of ``dL/dx_l``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import BasicBlock, BlockOptions, PreActBasicBlock


@dataclass(frozen=True)
class Variant:
    """One kind of stack: its block, whether it has a shortcut and batch norm, and whether each residual branch
    starts at zero (the last convolution zero-initialised: SkipInit's scalar at 0, or "zero-init the last γ")."""

    label: str
    block: type[BasicBlock] | type[PreActBasicBlock]
    shortcut: bool
    batch_norm: bool
    zero_init: bool = False


VARIANTS = {
    "plain_bn": Variant("plain, batch norm", BasicBlock, False, True),
    "post_bn": Variant("residual (post-activation), batch norm", BasicBlock, True, True),
    "pre_bn": Variant("residual (pre-activation), batch norm", PreActBasicBlock, True, True),
    "pre_none": Variant("residual (pre-activation), no normalisation", PreActBasicBlock, True, False),
    "pre_none_zero": Variant("residual, no normalisation, branches start at zero", PreActBasicBlock, True, False, True),
    "plain_none": Variant("plain, no normalisation", BasicBlock, False, False),
}


def build_stack(variant: Variant, depth: int, width: int, in_chans: int = 3) -> nn.Sequential:
    """A stem convolution then ``depth`` blocks of ``width`` channels, He-initialised (fan-out, as the zoo)."""
    norm = nn.BatchNorm2d if variant.batch_norm else (lambda c: nn.Identity())
    opts = BlockOptions(norm_layer=norm)
    blocks = [variant.block(width, width, 1, nn.Identity() if variant.shortcut else None, opts) for _ in range(depth)]
    stack = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), *blocks)
    for m in stack.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if variant.zero_init:
        for b in blocks:
            nn.init.zeros_(b.conv2.weight)
    return stack


@dataclass
class Signal:
    """Per block (index 0 is the stem's output): the stream's statistics and the gradient that reaches it."""

    variance: list[float]
    squared_mean: list[float]
    grad_norm: list[float]


def measure(stack: nn.Sequential, images: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> Signal:
    """One forward and backward pass in training mode (batch norm uses the batch's statistics, as at the
    first step of training) through ``stack`` and a fixed linear read-out."""
    stack.train()
    outputs: list[torch.Tensor] = []
    x = images
    for layer in stack:
        x = layer(x)
        x.retain_grad()
        outputs.append(x)
    head = torch.randn(classes, x.shape[1], generator=torch.Generator().manual_seed(1)).to(x) / math.sqrt(x.shape[1])
    F.cross_entropy(F.linear(x.mean((2, 3)), head), labels).backward()
    with torch.no_grad():
        return Signal([o.var(dim=(0, 2, 3)).mean().item() for o in outputs],
                      [o.mean(dim=(0, 2, 3)).pow(2).mean().item() for o in outputs],
                      [o.grad.norm().item() if o.grad is not None else 0.0 for o in outputs])


def signal_propagation(depths: tuple[int, ...] = (8, 16, 32, 64, 128, 256), width: int = 16, size: int = 16,
                       batch: int = 32, variants: tuple[str, ...] = tuple(VARIANTS), seed: int = 0
                       ) -> dict[str, dict[int, Signal]]:
    """``Signal`` of every variant at every depth, on the same Gaussian images and labels."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not depths or min(depths) < 1 or width < 1 or size < 4 or batch < 2:
        raise ConfigError(f"signal propagation needs known variants ({', '.join(VARIANTS)}), depths >= 1, "
                          f"width >= 1, size >= 4 and batch >= 2; got {unknown or ''} {depths} {width} {size} {batch}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    results: dict[str, dict[int, Signal]] = {}
    for name in variants:
        results[name] = {}
        for depth in depths:
            torch.manual_seed(seed)
            results[name][depth] = measure(build_stack(VARIANTS[name], depth, width), images, labels)
    return results


def growth(signal: Signal) -> str:
    """How the stream's variance changes with depth, read from the deeper half of the stack: "exponential
    growth" or "exponential decay" (a steady ratio per block beyond 1.2 or below 1/1.2), else "flat" or
    "linear" (a log-log slope near 0 or 1), or "exploded" (it overflowed)."""
    v = signal.variance
    n = len(v)
    if any(not math.isfinite(x) for x in v):
        return "exploded"
    if n < 8 or min(v) <= 0:
        return "undetermined"
    a, b = n // 2, n - 1
    slope = math.log(v[b] / v[a]) / math.log(b / a)
    per_block = (v[b] / v[a]) ** (1 / (b - a))
    if per_block > 1.2 or per_block < 1 / 1.2:
        return "exponential growth" if per_block > 1 else "exponential decay"
    return "flat" if abs(slope) < 0.35 else "linear" if 0.6 < slope < 1.4 else f"power {slope:.2f}"


def run_signal(out: str | Path, *, quick: bool = False, seed: int = 0, depths: tuple[int, ...] | None = None,
               log: Callable[[str], None] = print) -> dict:
    """The experiment behind ``resnets experiment signal``: ``signal.json`` and ``signal.png`` in ``out``.
    ``quick``: width 16 on 16x16 images, batch 32 (about 15 s on 2 cores); else width 32 on 16x16 images,
    batch 64 (about 45 s).
    ``depths``: the stack depths (default 8 to 256 blocks)."""
    from ..files import atomic_write
    from ..plots import plot_signal

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width, size, batch = (16, 16, 32) if quick else (32, 16, 64)
    depths = depths or (8, 16, 32, 64, 128, 256)
    results = signal_propagation(depths, width, size, batch, seed=seed)
    deepest = max(depths)
    summary: dict[str, dict[str, Any]] = {
        name: {"label": VARIANTS[name].label, "variance_growth": growth(by_depth[deepest]),
               "final_variance": {d: _finite(by_depth[d].variance[-1]) for d in depths},
               "grad_first_over_last": {d: _finite(by_depth[d].grad_norm[0] / by_depth[d].grad_norm[-1])
                                        for d in depths}}
        for name, by_depth in results.items()}
    deepest_rows = {n: {k: [_finite(v) for v in vals] for k, vals in asdict(r[deepest]).items()}
                    for n, r in results.items()}
    report = {"width": width, "image_size": size, "batch": batch, "depths": list(depths), "seed": seed,
              "note": "null: overflowed float32 (above 3.4e38)", "summary": summary, "deepest": deepest_rows}
    atomic_write(out / "signal.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    plot_signal({VARIANTS[n].label: r[deepest] for n, r in results.items()},
                {VARIANTS[n].label: [r[d].variance[-1] for d in depths] for n, r in results.items()},
                depths, out / "signal.png")
    for s in summary.values():
        log(f"{s['label']:<52} variance {s['variance_growth']:<12} final variance at {deepest} blocks "
            f"{_show(s['final_variance'][deepest])}, gradient first/last {_show(s['grad_first_over_last'][deepest])}")
    return report


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _show(x: float | None) -> str:
    return "overflow" if x is None else f"{x:.3g}"
