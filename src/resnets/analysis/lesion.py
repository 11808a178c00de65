"""The ensemble view of residual networks (Veit et al., 2016, "Residual Networks Behave Like Ensembles of
Relatively Shallow Networks"): delete blocks at test time and watch the accuracy.

Deleting a residual block keeps its shortcut: ``y = shortcut(x)`` (followed by the ReLU that
post-activation blocks apply after the addition). A network of ``n`` blocks unrolls into ``2^n`` paths,
``C(n, k)`` of them of length ``k``; deleting one block removes half of the paths and leaves the other
half, so a residual network degrades smoothly. Deleting a layer of a plain network (possible only where
its input and output shapes agree) breaks its single path.
"""
from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..models.resnet import ResNet, StagedNet


def blocks_of(model: StagedNet) -> list[nn.Module]:
    """The network's blocks, input to output."""
    return [block for stage in model.stages for block in stage]


def _convs(block: nn.Module) -> list[nn.Conv2d]:
    return [getattr(block, n) for n in ("conv1", "conv2", "conv3") if hasattr(block, n)]


def downsamples(block: nn.Module) -> bool:
    """Whether the block changes the shape (a stride or a change of width)."""
    convs = _convs(block)
    return any(c.stride != (1, 1) for c in convs) or convs[0].in_channels != convs[-1].out_channels


def deletable(block: nn.Module) -> bool:
    """A residual block always is (its shortcut remains); a plain one only where it keeps the shape."""
    return block.downsample is not None or not downsamples(block)


def _shortcut_only(block: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """What is left of a block (one of ``models.blocks``) without its residual branch."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if block.downsample is None:  # plain network: the layer is skipped
            return x
        if block.preact:
            pre = torch.relu(block.bn1(x))
            return block.downsample(block._shortcut_input(x, pre))
        return torch.relu(block.downsample(x))

    return forward


@contextlib.contextmanager
def lesioned(model: ResNet, indices: set[int] | list[int]) -> Iterator[ResNet]:
    """Within the ``with``, the blocks at ``indices`` compute only their shortcut."""
    blocks = blocks_of(model)
    for i in indices:
        if not deletable(blocks[i]):
            raise ValueError(f"block {i} changes the shape and has no shortcut: it cannot be deleted")
        blocks[i].forward = _shortcut_only(blocks[i])
    try:
        yield model
    finally:
        for i in indices:
            del blocks[i].forward


def path_lengths(n: int) -> list[int]:
    """How many of the ``2^n`` paths through ``n`` residual blocks have length 0..n: ``C(n, k)``."""
    return [math.comb(n, k) for k in range(n + 1)]


def lesion_study(model: StagedNet, accuracy: Callable[[StagedNet], float], samples: int = 10,
                 seed: int = 0) -> dict[str, Any]:
    """Accuracy with each deletable block deleted alone, and with ``k`` random blocks deleted
    (``samples`` draws for each ``k``, mean and spread), next to the intact network's."""
    if not isinstance(model, ResNet):
        raise ConfigError(f"a lesion study deletes the blocks of a ResNet (or its plain twin); a "
                          f"{type(model).__name__} has none to delete")
    blocks = blocks_of(model)
    candidates = [i for i, b in enumerate(blocks) if deletable(b)]
    base = accuracy(model)
    single: list[dict[str, Any]] = []
    for i in range(len(blocks)):
        if i in candidates:
            with lesioned(model, [i]):
                single.append({"block": i, "accuracy": accuracy(model), "downsampling": downsamples(blocks[i])})
        else:
            single.append({"block": i, "accuracy": None, "downsampling": True})
    rng = random.Random(seed)
    multi = []
    for k in range(1, len(candidates) + 1):
        accs = []
        for _ in range(samples if k < len(candidates) else 1):
            with lesioned(model, rng.sample(candidates, k)):
                accs.append(accuracy(model))
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
        multi.append({"deleted": k, "mean": mean, "std": std, "min": min(accs), "max": max(accs)})
    return {"blocks": len(blocks), "deletable": len(candidates), "intact": base, "single": single,
            "random": multi, "path_lengths": path_lengths(len(blocks)) if model_is_residual(model) else None}


def model_is_residual(model: ResNet) -> bool:
    return all(b.downsample is not None for b in blocks_of(model))


def plot_lesions(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Figures of one or more lesion studies (by label): single deletions, k random deletions, path lengths."""
    from ..plots import plt, save_figure

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, r in results.items():
        xs = [s["block"] for s in r["single"] if s["accuracy"] is not None]
        ax.plot(xs, [s["accuracy"] for s in r["single"] if s["accuracy"] is not None], "o-", label=label)
        ax.axhline(r["intact"], ls=":", color=ax.lines[-1].get_color(), lw=1)
    ax.set(xlabel="deleted block", ylabel="top-1 accuracy (%)", title="Deleting one block at test time")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "lesion_single.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, r in results.items():
        ks = [0] + [m["deleted"] for m in r["random"]]
        means = [r["intact"]] + [m["mean"] for m in r["random"]]
        stds = [0.0] + [m["std"] for m in r["random"]]
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set(xlabel="number of blocks deleted at random", ylabel="top-1 accuracy (%)",
           title="Deleting several blocks")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "lesion_random.png"))

    residual = next((r for r in results.values() if r["path_lengths"]), None)
    if residual is not None:
        counts = residual["path_lengths"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.bar(range(len(counts)), counts)
        ax.set(xlabel="path length (blocks)", ylabel="number of paths",
               title=f"{2 ** (len(counts) - 1):,} paths through {len(counts) - 1} blocks (binomial)")
        written.append(save_figure(fig, out / "path_lengths.png"))
    return written


def analyze_lesion(checkpoints: dict[str, str | Path], out: str | Path, *, split: str = "val", samples: int = 10,
                   images: int | None = None, data: str | None = None, data_root: str | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Lesion studies of one or more checkpoints (by label; e.g. a ResNet and its plain twin) on ``split``
    (or a class-balanced ``images`` of it): figures, ``lesion.csv`` and ``report.md`` in ``out``."""
    import csv
    import json

    from ..data import take
    from ..engine.evaluate import load_checkpoint_and_data, split_of
    from ..engine.predict import evaluate_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, path in checkpoints.items():
        loaded = load_checkpoint_and_data(path, data, data_root)
        subset = take(split_of(loaded.dataset, split), images)

        def accuracy(model: StagedNet, subset: Any = subset, loaded: Any = loaded) -> float:
            with torch.no_grad():
                return evaluate_split(model, subset, loaded.dataset.classes, loaded.aug, split).top1

        results[label] = lesion_study(loaded.model, accuracy, samples=samples, seed=seed)
    figures = plot_lesions(results, out)
    with (out / "lesion.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["network", "kind", "blocks_deleted", "block", "accuracy", "std"])
        for label, r in results.items():
            w.writerow([label, "intact", 0, "", round(r["intact"], 2), ""])
            for s in r["single"]:
                w.writerow([label, "single", 1, s["block"], "" if s["accuracy"] is None else round(s["accuracy"], 2),
                            ""])
            for m in r["random"]:
                w.writerow([label, "random", m["deleted"], "", round(m["mean"], 2), round(m["std"], 2)])
    (out / "lesion.json").write_text(json.dumps(results, indent=2))
    lines = ["# Lesion study: deleting blocks at test time", "",
             f"Top-1 accuracy on {len(subset)} images of the {split} split. Deleting a residual block keeps "
             "its shortcut; a plain network's layer can only be skipped where it keeps the shape.", "",
             "| network | blocks | intact | one block deleted (mean, worst) | half the blocks deleted (mean) |",
             "|---|---|---|---|---|"]
    for label, r in results.items():
        singles = [s["accuracy"] for s in r["single"] if s["accuracy"] is not None]
        half = next((m["mean"] for m in r["random"] if m["deleted"] >= r["deletable"] // 2), None)
        lines.append(f"| {label} | {r['blocks']} | {r['intact']:.2f}% | {sum(singles) / len(singles):.2f}%, "
                     f"{min(singles):.2f}% | {'-' if half is None else f'{half:.2f}%'} |")
    lines += ["", "Veit et al. (2016): deleting one block of a residual network barely changes its accuracy "
              "(except at downsampling blocks), and accuracy falls smoothly as more are deleted; a plain "
              "network collapses.", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return results
