"""Gradient flow: per-layer gradient norms of a plain network and a residual one of the same depth.

A residual block computes ``y = x + F(x)``, so ``dL/dx = dL/dy (1 + dF/dx)``: the identity term carries
the gradient to the first layers whatever the residual branches do. A plain network multiplies the
Jacobians of all its layers, and the gradient that reaches its first layers can shrink or blow up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The 3x3 and 1x1 convolutions of the main path, input to output (shortcut projections left out)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n
            and ".se." not in n]


def gradient_norms(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """The L2 norm of each main-path convolution's weight gradient, averaged over ``batches``
    (the model is left in training mode, as during training; its weights do not change)."""
    model.train()
    layers = conv_layers(model)
    totals = [0.0] * len(layers)
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for i, (_, conv) in enumerate(layers):
            grad = conv.weight.grad
            totals[i] += (grad.norm().item() if grad is not None else 0.0) / len(batches)
    model.zero_grad(set_to_none=True)
    return totals


def train_steps(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
                lr: float = 0.1) -> list[float]:
    """``steps`` of SGD (momentum 0.9, weight decay 1e-4): the losses."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(steps):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def plot_gradient_norms(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Gradient norm against layer depth on a log scale, one line per (network, moment)."""
    from ..plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, norms in curves.items():
        ax.plot(range(1, len(norms) + 1), norms, "--" if "init" in label else "-", marker=".", label=label)
    ax.set_yscale("log")
    ax.set(xlabel="layer (input → output)", ylabel="‖∂L/∂W‖ (log scale)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save_figure(fig, path)


def summarize(norms: list[float]) -> dict[str, Any]:
    """First-to-last ratio of the gradient norms: how much of the gradient reaches the first layer."""
    return {"first": norms[0], "last": norms[-1], "first_over_last": norms[0] / norms[-1] if norms[-1] else None,
            "min": min(norms), "max": max(norms)}


def analyze_gradients(out: str | Path, *, depth: int = 56, data: str = "digits", data_root: str | None = None,
                      steps: int = 300, batch_size: int = 128, measure_batches: int = 4, lr: float = 0.1,
                      seed: int = 0) -> dict[str, Any]:
    """Per-layer gradient norms of plain-``depth`` and ResNet-``depth`` at initialisation and after ``steps``
    SGD steps on ``data``: ``gradients.png`` (log scale), ``gradients.csv`` and ``report.md`` in ``out``."""
    import csv
    import json
    import itertools

    from ..data import AugmentConfig, BatchAugment, BatchLoader, ImageSet, load_data
    from .experiments import _cifar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_data(data, root=data_root, stream=False)  # a few batches: decoded into memory
    assert isinstance(dataset.train, ImageSet)  # as stream=False gives it
    aug = BatchAugment(AugmentConfig(), dataset.mean, dataset.std, dataset.num_classes)
    loader = BatchLoader(dataset.train, batch_size, shuffle=True, drop_last=True, seed=seed)
    g = torch.Generator().manual_seed(seed)

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count():
            for x, y in loader.batches(epoch):
                yield aug.train(x, y, g)

    fixed = list(itertools.islice(stream(), measure_batches))
    curves: dict[str, list[float]] = {}
    summary: dict[str, Any] = {}
    for kind, label in (("plain", f"plain-{depth}"), ("resnet", f"ResNet-{depth}")):
        name, args = _cifar(kind, depth)
        torch.manual_seed(seed)
        model = create_model(name, num_classes=dataset.num_classes, in_chans=dataset.in_chans, **args)
        curves[f"{label} at init"] = gradient_norms(model, fixed)
        losses = train_steps(model, stream(), steps, lr)
        curves[f"{label} after {steps} steps"] = gradient_norms(model, fixed)
        summary[label] = {"init": summarize(curves[f"{label} at init"]),
                          "trained": summarize(curves[f"{label} after {steps} steps"]),
                          "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    plot_gradient_norms(curves, out / "gradients.png",
                        f"Gradient norm per layer, plain-{depth} vs ResNet-{depth} ({dataset.name})")
    with (out / "gradients.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", *curves])
        for i, row in enumerate(zip(*curves.values())):
            w.writerow([i + 1, *(f"{v:.6g}" for v in row)])
    (out / "gradients.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# Gradient flow: plain-{depth} against ResNet-{depth}", "",
             f"Norm of each convolution's weight gradient (input to output), averaged over {measure_batches} "
             f"batches of {batch_size} from `{dataset.name}`, at initialisation and after {steps} SGD steps "
             f"(lr {lr}, momentum 0.9).", "",
             "| network | moment | first layer | last layer | first / last | loss |", "|---|---|---|---|---|---|"]
    for label, s in summary.items():
        for moment in ("init", "trained"):
            m = s[moment]
            loss = s["loss_first"] if moment == "init" else s["loss_last"]
            ratio = "-" if m["first_over_last"] is None else f"{m['first_over_last']:.3g}"
            lines.append(f"| {label} | {moment} | {m['first']:.3g} | {m['last']:.3g} | {ratio} | "
                         f"{'-' if loss is None else f'{loss:.3f}'} |")
    lines += ["", "![gradients](gradients.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return summary
