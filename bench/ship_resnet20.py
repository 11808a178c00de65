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

import resnets
from resnets.deploy.export import export_checkpoint
from resnets.machine import machine_info

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE.parent / "src" / "resnets" / "weights" / "resnet20_cifar10.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    p.add_argument("--epochs", type=float, default=40)
    p.add_argument("--out", default="runs/ship-resnet20-cifar10")
    args = p.parse_args()

    cfg = resnets.make_config("cifar10-quick", data=args.data, epochs=args.epochs, out=args.out)
    result = resnets.train(cfg)
    test = resnets.evaluate(result.out_dir / "best.pt", split="test")
    command = f"python bench/ship_resnet20.py --epochs {args.epochs:g}"
    extra = {"test_top1": round(test.top1, 2), "test_top1_tta_flip": round(result.test.top1, 2),
             "val_top1": round(result.val.top1, 2), "data": "CIFAR-10, JPEG quality 75 copy (cifar10-jpeg.tar.gz)",
             "command": command, "train_seconds": round(result.seconds, 1), "machine": machine_info()["cpu"]}
    export_checkpoint(result.out_dir / "best.pt", "safetensors", WEIGHTS, extra=extra)
    print(json.dumps({"weights": str(WEIGHTS), **extra}, indent=2))


if __name__ == "__main__":
    main()
