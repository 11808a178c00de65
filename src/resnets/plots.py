"""Figures: learning curves and confusion matrices, written as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, tight: bool = True) -> Path:
    """Lay out (unless the figure has its own layout), write as PNG (120 dpi) and close a figure."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "",
                metric: tuple[str, str] = ("acc", "accuracy (%)")) -> None:
    """Loss and ``metric`` (its key in the rows after ``train_``/``val_``, and its axis label) against epoch,
    train (dashed) and validation (solid)."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, *metric)):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], "--", label="train")
        if any(r.get(f"val_{key}") is not None for r in rows):
            ax.plot(epochs, [r[f"val_{key}"] for r in rows], "-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), max(4, 0.5 * k + 1.5)))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        top = max(max(row) for row in confusion) or 1
        for i, row in enumerate(confusion):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    save_figure(fig, path)


def plot_signal(deepest: dict[str, Any], final: dict[str, list[float]], depths: Sequence[int], path: Path) -> None:
    """Signal propagation plots: the stream's variance and the gradient norm at every block of the deepest
    stacks, and the final variance against depth, one line per kind of network (log scales)."""
    fig, (ax_var, ax_grad, ax_depth) = plt.subplots(1, 3, figsize=(16, 4.5))
    for label, signal in deepest.items():
        ax_var.plot(signal.variance, label=label)
        ax_grad.plot(signal.grad_norm, label=label)
        ax_depth.plot(depths, final[label], "o-", label=label)
    for ax, title, xlabel in ((ax_var, "variance of the stream at each block", "block"),
                              (ax_grad, "norm of dL/dx at each block", "block"),
                              (ax_depth, "variance at the last block, against depth", "blocks")):
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
    ax_depth.set_xscale("log", base=2)
    ax_var.legend(fontsize=7)
    save_figure(fig, path)


def plot_comparison(values: dict[str, list[float]], summaries: dict[str, Any], path: Path) -> None:
    """Each configuration's accuracy per seed (dots, one line per seed across configurations: the pairing) and
    its mean with the 95% interval."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names) + 2), 4))
    seeds = len(next(iter(values.values())))
    for s in range(seeds):
        ax.plot(range(len(names)), [values[n][s] for n in names], "o-", color="grey", alpha=0.35, lw=1)
    for i, n in enumerate(names):
        lo, hi = summaries[n].ci95
        ax.errorbar(i + 0.12, summaries[n].mean, yerr=[[summaries[n].mean - lo], [hi - summaries[n].mean]],
                    fmt="s", color="C0", capsize=5)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{seeds} seeds each: per seed (grey, paired) and mean with 95% interval (blue)", fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
