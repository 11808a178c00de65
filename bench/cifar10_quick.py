"""A short CPU run of the `cifar10-quick` recipe on CIFAR-10 (JPEG copy): accuracy per epoch.

    python bench/cifar10_quick.py --epochs 4

Writes bench/results/cifar10_quick.json. The test split is evaluated once, at the end, on the
checkpoint that the validation split chose.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import resnets
from resnets.machine import machine_info

from common import CIFAR10_JPEG, RESULTS, write_result



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(CIFAR10_JPEG))
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    cfg = resnets.make_config("cifar10-quick", data=args.data, epochs=args.epochs, out="runs/bench-cifar10-quick")
    result = resnets.train(cfg)
    record = {
        "command": f"python bench/cifar10_quick.py --epochs {args.epochs:g}",
        "machine": machine_info(),
        "recipe": "cifar10-quick", "model": cfg.model, "epochs": args.epochs, "data": Path(args.data).name,
        "per_epoch": [{k: round(r[k], 3) for k in ("epoch", "train_acc", "val_acc", "images_per_s", "seconds")}
                      for r in result.history],
        "best_val_top1": round(result.val.top1, 2),
        "test_top1": round(result.test.top1, 2) if result.test else None,
        "total_seconds": round(result.seconds, 1),
    }
    write_result("cifar10_quick", record, args.out)


if __name__ == "__main__":
    main()
