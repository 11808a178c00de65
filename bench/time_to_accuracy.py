"""Time to accuracy on CIFAR-10: the `cifar10-fast` recipe to 94%, and the paper's ResNet-20/56 to 91%.

    python bench/time_to_accuracy.py fast --seeds 0 1 2 3 4        # the recipe as shipped (Muon, 8 epochs)
    python bench/time_to_accuracy.py fast --epochs 6 --seeds 0     # a shorter budget, for the curve
    python bench/time_to_accuracy.py fast --recipe cifar10-fast-sgd --seeds 0 1 2   # SGD, 10 epochs
    python bench/time_to_accuracy.py fast --seeds 0 1 2 3 4 --set whiten_bias_epochs=3   # a change, A/B
    python bench/time_to_accuracy.py paper --model resnet20 --epochs 30
    python bench/time_to_accuracy.py fast --device cuda --compile --seeds 0 1 2 \
        --out bench/results/h100 --figure docs/figures/time_to_accuracy_h100.png   # on a GPU

Every run trains from scratch on CIFAR-10 (by default the original pixels, the python-batches archive; the
JPEG copy with --data) and uses the test split once, at its end.
`fast` runs have no validation split (fixed hyper-parameters), so the accuracy-against-time curve is made
of runs with different epoch budgets. `paper` runs use the `cifar10-quick` recipe (the fast training path:
bf16, channels_last, batch augmentation on the device) with its 5,000-image validation split, and report
when the validation accuracy first reached the target.

Each run also records its training FLOPs (forward and backward, counted by PyTorch's FlopCounterMode on one
batch, times the images seen) and their share of the machine's matmul peak in the run's format, measured
once per invocation before the first run (a running campaign paused): FLOPs / (training seconds x peak).

A run with ``--set KEY=VALUE`` (a setting of the recipe changed) is summarised beside the same recipe without
it: over the seeds both have, the mean difference in test top-1 and its paired t-test and Wilcoxon p-values.

Each run is added to bench/results/lossless/time_to_accuracy.json as soon as it ends, and runs already there are
skipped, so the benchmark can be spread over several sittings. Also writes time_to_accuracy.csv and
docs/figures/time_to_accuracy_lossless.png (``--figure``).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import resnets
from resnets.benchmark.peaks import matmul_peak
from resnets.cli.engine import key_value
from resnets.engine.predict import resolve_device
from resnets.machine import machine_info, native_bf16

from common import CIFAR10_LOSSLESS, RESULTS, campaign_paused, write_result

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "time_to_accuracy_lossless.png"
FAST_TARGET, PAPER_TARGET = 94.0, 91.0


def recipe_of(run: dict[str, Any]) -> str:
    """The recipe a recorded run trained with."""
    return str(run["recipe"])


def variant(recipe: str) -> str:
    """What a fast recipe adds to a run's name: nothing for cifar10-fast, "-sgd" for cifar10-fast-sgd."""
    return "" if recipe in ("cifar10-fast", "cifar10-quick") else "-" + recipe.removeprefix("cifar10-fast-")


def changes(overrides: dict[str, Any]) -> str:
    """Changed settings as people read them: `` whiten_bias_epochs=3`` (nothing for none)."""
    return "".join(f" {k}={v}" for k, v in sorted(overrides.items()))


def run_key(model: str, epochs: float, seed: int, compile: bool, recipe: str = "cifar10-fast",
            overrides: dict[str, Any] | None = None) -> str:
    """A run's name in the record and its folder: ``fastplain8-e8-s0-whiten_bias_epochs3``."""
    changed = "".join(f"-{k}{v}" for k, v in sorted((overrides or {}).items()))
    return f"{model}{variant(recipe)}-e{epochs:g}-s{seed}{changed}" + "-compile" * compile


def _run_dir(model: str, epochs: float, seed: int, compile: bool, recipe: str = "cifar10-fast",
             overrides: dict[str, Any] | None = None) -> str:
    return "runs/tta-" + run_key(model, epochs, seed, compile, recipe, overrides)


def train_flops_per_image(model: str, batch: int = 16) -> float:
    """Forward and backward FLOPs of one 32x32 training image, counted on the network as it trains."""
    net = resnets.create_model(model, num_classes=10)
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(batch, 3, 32, 32)).sum().backward()
    return counter.get_total_flops() / batch


def add_peak_share(run: dict[str, Any], flops_per_image: float, train_images: int, peak: float) -> None:
    """Add the run's training FLOPs and their share of ``peak`` over its training seconds (the last partial
    batch of each epoch is dropped, as the loop does)."""
    flops = flops_per_image * (train_images // run["batch_size"] * run["batch_size"]) * run["epochs"]
    run["train_pflop"] = round(flops / 1e15, 4)
    run["peak_gflops"] = round(peak / 1e9, 1)
    run["peak_share"] = round(flops / (run["train_seconds"] * peak), 3)


def run_fast(data: str, model: str, epochs: float, seed: int, device: str, compile: bool,
             recipe: str = "cifar10-fast", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides = overrides or {}
    cfg = resnets.make_config(recipe, **{**overrides, "model": model, "data": data, "epochs": epochs, "seed": seed,
                                         "device": device, "compile": compile, "progress": False,
                                         "out": _run_dir(model, epochs, seed, compile, recipe, overrides),
                                         "tensorboard": False})
    result = resnets.train(cfg)
    return {"kind": "fast", "recipe": recipe, "model": cfg.model, "epochs": epochs, "seed": seed,
            "batch_size": cfg.batch_size, **({"overrides": overrides} if overrides else {}),
            "compile": compile, "first_epoch_seconds": round(result.history[0]["train_seconds"], 2),
            "train_seconds": round(sum(r["train_seconds"] for r in result.history), 1),
            "total_seconds": round(result.seconds, 1), "test_top1": round(result.test.top1, 2)}


def run_paper(data: str, model: str, epochs: float, seed: int, device: str, compile: bool) -> dict[str, Any]:
    cfg = resnets.make_config("cifar10-quick", model=model, data=data, epochs=epochs, seed=seed, device=device,
                              compile=compile, out=_run_dir(model, epochs, seed, compile), progress=False,
                              tensorboard=False)
    result = resnets.train(cfg)
    elapsed, curve = 0.0, []
    for r in result.history:
        elapsed += r["train_seconds"]
        curve.append({"epoch": r["epoch"], "train_seconds": round(elapsed, 1), "val_top1": round(r["val_acc"], 2)})
    reached = next((c["train_seconds"] for c in curve if c["val_top1"] >= PAPER_TARGET), None)
    return {"kind": "paper", "recipe": "cifar10-quick", "model": model, "epochs": epochs, "seed": seed,
            "batch_size": cfg.batch_size,
            "compile": compile,
            "train_seconds": round(elapsed, 1), "total_seconds": round(result.seconds, 1),
            "test_top1": round(result.test.top1, 2), "best_val_top1": round(result.best_val_acc, 2),
            f"seconds_to_val_{PAPER_TARGET:g}": reached, "curve": curve}


def _group(run: dict[str, Any], with_changes: bool = True) -> str:
    """The name of the (recipe, model, epochs, changed settings, compiled) a run belongs to."""
    recipe = f" {recipe_of(run)}" if variant(recipe_of(run)) else ""
    changed = changes(run.get("overrides", {})) if with_changes else ""
    return f"{run['model']}{recipe} {run['epochs']:g} epochs{changed}" + (" compiled" if run.get("compile") else "")


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of the test accuracy and training time of each (recipe, model, epochs, changes); a group
    with changed settings is also compared with its unchanged twin over the seeds both have (paired)."""
    from resnets.analysis.stats import paired

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs.values():
        groups.setdefault(_group(r), []).append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        acc = [r["test_top1"] for r in rs]
        secs = [r["train_seconds"] for r in rs]
        out[name] = {"seeds": sorted(r["seed"] for r in rs), "test_top1_mean": round(statistics.mean(acc), 2),
                     "test_top1_std": round(statistics.stdev(acc), 2) if len(acc) > 1 else None,
                     "test_top1_min": min(acc), "train_seconds_mean": round(statistics.mean(secs), 1)}
        if rs[0]["kind"] == "fast":
            out[name]["reaches_94"] = out[name]["test_top1_mean"] >= FAST_TARGET
        twin = {r["seed"]: r for r in groups.get(_group(rs[0], with_changes=False), [])}
        pairs = sorted((r["seed"], r["test_top1"], twin[r["seed"]]["test_top1"]) for r in rs if r["seed"] in twin)
        if rs[0].get("overrides") and len(pairs) >= 2:
            test = paired([a for _, a, _ in pairs], [b for _, _, b in pairs])
            out[name]["against"] = {"group": _group(rs[0], with_changes=False), "seeds": [s for s, _, _ in pairs],
                                    "mean_difference": round(test.mean_difference, 3),
                                    "t_test_p": round(test.t_test_p, 4),
                                    "wilcoxon_p": None if test.wilcoxon_p is None else round(test.wilcoxon_p, 4)}
    return out


def write_csv(runs: dict[str, dict[str, Any]], path: Path) -> None:
    cols = ["run", "kind", "model", "epochs", "seed", "train_seconds", "total_seconds", "test_top1"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for key, r in sorted(runs.items()):
            w.writerow([key] + [r[c] for c in cols[1:]])


def plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    from resnets.plots import save_figure

    paper = [r for r in runs.values() if r["kind"] == "paper"]
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(11 if paper else 6, 4), squeeze=False)
    ax_fast = axes[0, 0]
    shipped = resnets.make_config("cifar10-fast").model  # the recipe as shipped: its own network
    fast = [r for r in runs.values() if r["kind"] == "fast" and r["model"] == shipped
            and recipe_of(r) == "cifar10-fast" and not r.get("overrides")]
    if fast:
        ax_fast.scatter([r["train_seconds"] / 60 for r in fast], [r["test_top1"] for r in fast],
                        label="cifar10-fast, one seed")
    budgets = sorted({r["epochs"] for r in fast})
    means = [(statistics.mean(r["train_seconds"] for r in fast if r["epochs"] == e) / 60,
              statistics.mean(r["test_top1"] for r in fast if r["epochs"] == e)) for e in budgets]
    if means:
        ax_fast.plot(*zip(*means), "-", label="mean per epoch budget")
    for e, (x, y) in zip(budgets, means):
        ax_fast.annotate(f"{e:g} ep", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax_fast.axhline(FAST_TARGET, ls="--", c="gray")
    ax_fast.set(xlabel="training time (min)", ylabel="test accuracy (%)", title="fast recipes, one point a seed")
    others: dict[str, list[dict[str, Any]]] = {}
    for r in (r for r in runs.values() if r["kind"] == "fast" and r not in fast):
        label = (f"{recipe_of(r)}, {r['model']}" if variant(recipe_of(r)) else r["model"]) + \
            changes(r.get("overrides", {}))
        others.setdefault(label, []).append(r)
    for label, rs in others.items():
        ax_fast.scatter([r["train_seconds"] / 60 for r in rs], [r["test_top1"] for r in rs], marker="x", label=label)
    if paper:
        ax_paper = axes[0, 1]
        for r in paper:
            ax_paper.plot([c["train_seconds"] / 60 for c in r["curve"]], [c["val_top1"] for c in r["curve"]],
                          label=f"{r['model']}, {r['epochs']:g} epochs (test {r['test_top1']:.2f}%)")
        ax_paper.axhline(PAPER_TARGET, ls="--", c="gray")
        ax_paper.set(xlabel="training time (min)", ylabel="validation accuracy (%)",
                     title="cifar10-quick, paper models")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["fast", "paper"])
    p.add_argument("--model", help="default: the recipe's (fast), resnet20 (paper)")
    p.add_argument("--recipe", default="cifar10-fast", help="fast: the recipe (e.g. cifar10-fast-sgd)")
    p.add_argument("--epochs", type=float, help="default: the recipe's (fast), 30 (paper)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data", default=str(CIFAR10_LOSSLESS))
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="train through torch.compile (its compilation is "
                   "timed: it falls in the first epoch)")
    p.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE", dest="overrides",
                   help="fast: change a setting of the recipe (repeatable); compared with the recipe as it is")
    p.add_argument("--out", default=str(RESULTS / "lossless"), help="folder of the results (JSON and CSV)")
    p.add_argument("--figure", default=str(FIGURE))
    args = p.parse_args()
    overrides = dict(args.overrides)
    if args.kind == "paper" and (args.recipe != "cifar10-fast" or overrides):
        p.error("--recipe and --set go with fast runs (paper runs use cifar10-quick)")
    fast = resnets.make_config(args.recipe) if args.kind == "fast" else None  # the recipe's network and epochs
    epochs = args.epochs or (fast.epochs if fast else 30)

    path = Path(args.out) / "time_to_accuracy.json"
    record = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    device = resolve_device(args.device)  # where the runs train, and so whose peak counts
    dtype = torch.bfloat16 if native_bf16(device) else torch.float32  # the format training autocasts to
    with campaign_paused():  # measured on a quiet machine, as the runs are
        peak = matmul_peak(dtype, device=device)
    print(f"matmul peak ({dtype}, {device}): {peak / 1e9:.0f} GFLOP/s")
    for seed in args.seeds:
        model = args.model or (fast.model if fast else "resnet20")
        key = run_key(model, epochs, seed, args.compile, args.recipe, overrides)
        if key in record["runs"]:
            print(f"{key}: already recorded, skipped")
            continue
        with campaign_paused() as quiet:  # a running training campaign waits while the run is timed
            run = run_fast(args.data, model, epochs, seed, args.device, args.compile, args.recipe, overrides) \
                if args.kind == "fast" else run_paper(args.data, model, epochs, seed, args.device, args.compile)
        run.update(quiet)
        add_peak_share(run, train_flops_per_image(model), 50_000 if args.kind == "fast" else 45_000, peak)
        record["runs"][key] = {**run, "machine": machine_info()}
        record["summary"] = summarize(record["runs"])
        record["data"] = Path(args.data).name
        record["command"] = "python bench/time_to_accuracy.py {fast|paper} [--model M] [--epochs E] --seeds ..."
        write_result("time_to_accuracy", record, args.out, echo=False)
        write_csv(record["runs"], Path(args.out) / "time_to_accuracy.csv")
        plot(record["runs"], Path(args.figure))
        print(json.dumps({key: {k: v for k, v in run.items() if k != "curve"}}, indent=2))
    print(json.dumps(record.get("summary", {}), indent=2))


if __name__ == "__main__":
    main()
