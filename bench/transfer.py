"""Transfer learning on real data: pretrain on five CIFAR-10 classes, then learn the other five from a
few labelled images, three ways with the same network and budget.

    python bench/transfer.py --pretrain-epochs 10 --per-class 20 50 200

- source task: airplane, automobile, bird, cat, deer (all 25,000 training images, 10% held out);
- target task: dog, frog, horse, ship, truck, with only ``--per-class`` training images per class
  (10% of them held out for validation) and all 5,000 of their test images;
- ``scratch``: ResNet-20 trained on the target subset from random weights;
- ``finetune``: the pretrained ResNet-20 with a new head (``resnets finetune --from``), same epochs;
- ``linear probe``: logistic regression on the pretrained network's pooled features.

Writes bench/results/transfer.json. The test split is used once per method, at the end.
"""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import torch

import resnets
from resnets.engine.train import TrainResult
from resnets.machine import machine_info

from common import CIFAR10_JPEG, RESULTS, write_result
from resnets.transfer import features, finetune_config_args

SOURCE = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")


def extract(archive: Path, out: Path, classes: tuple[str, ...], per_class: int | None, seed: int = 0) -> Path:
    """Copy ``classes`` of the CIFAR-10 image tree in ``archive`` to ``out`` (train and test); with
    ``per_class``, keep that many training images per class, chosen with a fixed seed."""
    if out.exists():
        return out
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/")[-2] in classes]
        keep = []
        for cls in classes:
            for split in ("train", "test"):
                group = sorted((m for m in members if m.name.split("/")[-3:-1] == [split, cls]), key=lambda m: m.name)
                if split == "train" and per_class is not None:
                    pick = torch.randperm(len(group), generator=torch.Generator().manual_seed(seed))[:per_class]
                    group = [group[i] for i in sorted(pick.tolist())]
                keep += group
        tmp = out.with_name(out.name + ".tmp")
        for m in keep:
            split, cls, name = m.name.split("/")[-3:]
            dest = tmp / split / cls / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(m).read())
        tmp.rename(out)
    return out


def summary(result: TrainResult) -> dict:
    return {"best_epoch": result.best_epoch, "val_top1": round(result.val.top1, 2),
            "test_top1": round(result.test.top1, 2), "seconds": round(result.seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(CIFAR10_JPEG))
    p.add_argument("--work", default="runs/bench-transfer")
    p.add_argument("--pretrain-epochs", type=float, default=10)
    p.add_argument("--per-class", type=int, nargs="+", default=[20, 50, 200])
    p.add_argument("--epochs", type=int, default=40, help="epochs on the target subset (both scratch and finetune)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    work = Path(args.work)
    source = extract(Path(args.data), work / "source", SOURCE, None)
    pretrained = work / "pretrain" / "best.pt"
    if not pretrained.exists():
        resnets.train(resnets.make_config("cifar10-quick", data=str(source), epochs=args.pretrain_epochs,
                                          out=str(pretrained.parent), tta_flip=False))
    pre = resnets.evaluate(pretrained, str(source), split="test")

    rows = []
    for n in args.per_class:
        target = extract(Path(args.data), work / f"target-{n}", TARGET, n)
        budget = dict(data=str(target), epochs=args.epochs, batch_size=32, tta_flip=False)
        scratch = resnets.train(resnets.make_config("finetune", model="resnet20", lr=0.1, head_lr_mult=1,
                                                    out=str(work / f"scratch-{n}"), **budget))
        tuned = resnets.train(resnets.make_config("finetune", **finetune_config_args(pretrained, None),
                                                  out=str(work / f"finetune-{n}"), **budget))
        probe = features(pretrained, str(target), probe=True)["linear_probe_top1"]
        rows.append({"train_images_per_class": n, "test_images": tuned.test.n, "scratch": summary(scratch),
                     "finetune": summary(tuned), "linear_probe": {k: round(v, 2) for k, v in probe.items()}})

    record = {
        "command": f"python bench/transfer.py --pretrain-epochs {args.pretrain_epochs:g} "
                   f"--per-class {' '.join(map(str, args.per_class))} --epochs {args.epochs}",
        "machine": machine_info(),
        "model": "resnet20", "data": Path(args.data).name,
        "source": {"classes": SOURCE, "epochs": args.pretrain_epochs, "test_top1": round(pre.top1, 2)},
        "target": {"classes": TARGET, "epochs": args.epochs, "val": "10% of the subset"},
        "results": rows,
    }
    write_result("transfer", record, args.out)


if __name__ == "__main__":
    main()
