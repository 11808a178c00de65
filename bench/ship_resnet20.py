"""Train the CIFAR-10 ResNet-20 that ships inside the package (src/resnets/weights/resnet20_cifar10.safetensors).

    python bench/ship_resnet20.py --epochs 40

The `cifar10-quick` recipe (Nesterov SGD, cosine, label smoothing, EMA) on the JPEG copy of CIFAR-10,
45k/5k train/validation split; the checkpoint is chosen on validation, the test split is evaluated
once at the end, and its accuracy goes into the weights file's metadata with this command.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import resnets
from resnets.engine.checkpoint import load_training_checkpoint, model_from_checkpoint, save_weights
from resnets.machine import machine_info

from common import CIFAR10_JPEG

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "resnets" / "weights" / "resnet20_cifar10.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(CIFAR10_JPEG))
    p.add_argument("--epochs", type=float, default=40)
    p.add_argument("--out", default="runs/ship-resnet20-cifar10")
    args = p.parse_args()

    run = Path(args.out)
    if not (run / "report.json").exists():  # a finished run is packaged again without retraining
        resnets.train(resnets.make_config("cifar10-quick", data=args.data, epochs=args.epochs, out=str(run)))
    report = json.loads((run / "report.json").read_text())
    best = run / "best.pt"
    test = resnets.evaluate(best, args.data, split="test")
    extra = {"test_top1": round(test.top1, 2), "test_top1_tta_flip": round(report["test"]["top1"], 2),
             "val_top1_tta_flip": round(report["val"]["top1"], 2), "trained_on": "CIFAR-10, JPEG quality 75 copy "
             "(cifar10-jpeg.tar.gz), 45k/5k train/validation", "command": f"python bench/ship_resnet20.py "
             f"--epochs {args.epochs:g}", "train_seconds": round(report["seconds"], 1), "machine": machine_info()["cpu"]}
    ckpt = load_training_checkpoint(best)
    ckpt["config"]["data"] = "cifar10"  # by default, evaluate on the official CIFAR-10 (--data-root)
    save_weights(WEIGHTS, ckpt, extra)
    model, _ = model_from_checkpoint(best)
    shipped, _ = model_from_checkpoint(WEIGHTS)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values()))
    print(json.dumps({"weights": str(WEIGHTS), **extra}, indent=2))


if __name__ == "__main__":
    main()
