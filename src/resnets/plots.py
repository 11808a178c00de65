"""Figures: learning curves and confusion matrices, written as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write as PNG (120 dpi) and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy against epoch, train (dashed) and validation (solid)."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy (%)")):
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
