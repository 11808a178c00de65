"""The paper's claims, checked on real data at a reduced CPU scale (a benchmark, not a test):

    python bench/experiments.py --subset 10000 --epochs 10

1. degradation: plain-56 trains worse than plain-20, while ResNet-56 is at least as good as ResNet-20;
2. gradients: across the depth of plain-56 the gradient norms spread over orders of magnitude (at
   initialisation they explode towards the input, with batch norm), and after training its first layers
   get a far smaller share than ResNet-56's;
3. lesion: deleting one block of the trained ResNet-56 costs little on average, while skipping a layer
   of plain-56 costs far more.

Writes bench/results/experiments.json and copies the figures to docs/figures/.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from resnets.analysis.experiments import run_experiment
from resnets.analysis.gradients import analyze_gradients
from resnets.analysis.lesion import analyze_lesion
from resnets.machine import machine_info

from common import CIFAR10_JPEG, write_result

DOCS = Path(__file__).resolve().parents[1] / "docs" / "figures"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(CIFAR10_JPEG))
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--gradient-steps", type=int, default=200)
    p.add_argument("--lesion-images", type=int, default=1000)
    p.add_argument("--work", default="runs/bench-experiments")
    args = p.parse_args()
    work = Path(args.work)

    deg = run_experiment("degradation", work / "degradation", data=args.data, epochs=args.epochs,
                         subset=args.subset, progress=False)
    by = {r["label"]: r for r in deg["runs"]}
    cached = work / "gradients" / "gradients.json"  # a rerun reuses finished analyses
    grads = json.loads(cached.read_text()) if cached.exists() else analyze_gradients(
        work / "gradients", depth=56, data=args.data, steps=args.gradient_steps, batch_size=64)
    cached = work / "lesion" / "lesion.json"
    lesion = json.loads(cached.read_text()) if cached.exists() else analyze_lesion(
        {"ResNet-56": work / "degradation" / "resnet-56" / "best.pt",
         "plain-56": work / "degradation" / "plain-56" / "best.pt"},
        work / "lesion", images=args.lesion_images, samples=3)

    def spread(s: dict) -> float:
        return s["max"] / s["min"]

    def single_mean(r: dict) -> float:
        vals = [s["accuracy"] for s in r["single"] if s["accuracy"] is not None]
        return sum(vals) / len(vals)

    claims = {
        "plain-56 trains worse than plain-20 (final training error)":
            by["plain-56"]["train_error"] > by["plain-20"]["train_error"],
        "ResNet-56 at least as good as ResNet-20 (validation error)":
            by["ResNet-56"]["val_error"] <= by["ResNet-20"]["val_error"],
        "gradient norms spread over depth far more in plain-56 than ResNet-56 at init (max/min, 10x more)":
            spread(grads["plain-56"]["init"]) > 10 * spread(grads["ResNet-56"]["init"]),
        "after training, plain-56's first layer gets a smaller share of the gradient (first/last) than ResNet-56's":
            grads["plain-56"]["trained"]["first_over_last"] < grads["ResNet-56"]["trained"]["first_over_last"],
        "one deleted block costs ResNet-56 less than plain-56 (mean accuracy drop)":
            lesion["ResNet-56"]["intact"] - single_mean(lesion["ResNet-56"])
            < lesion["plain-56"]["intact"] - single_mean(lesion["plain-56"]),
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    for folder, names in (("degradation", ["curves.png"]), ("gradients", ["gradients.png"]),
                          ("lesion", ["lesion_single.png", "lesion_random.png", "path_lengths.png"])):
        for name in names:
            shutil.copyfile(work / folder / name, DOCS / (name if name.startswith(folder) else f"{folder}_{name}"))
    record = {
        "command": f"python bench/experiments.py --subset {args.subset} --epochs {args.epochs:g}",
        "machine": machine_info(), "data": Path(args.data).name,
        "degradation": [{k: r[k] for k in ("label", "params", "train_error", "val_error", "test_error", "seconds")}
                        for r in deg["runs"]],
        "gradients": grads,
        "lesion": {label: {"intact": r["intact"], "single_mean": single_mean(r),
                           "single_worst": min(s["accuracy"] for s in r["single"] if s["accuracy"] is not None),
                           "random": r["random"]} for label, r in lesion.items()},
        "claims": claims,
    }
    write_result("experiments", record, echo=False)
    for claim, ok in claims.items():
        print(f"{'holds' if ok else 'FAILS'}: {claim}")


if __name__ == "__main__":
    main()
