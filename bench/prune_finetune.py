"""A pruned network against its parent at equal extra training: prune a trained checkpoint (L1 norm, inner
channels rounded to a multiple of 8), re-estimate batch norm, fine-tune it; fine-tune the unpruned parent the
same way (the same epochs, recipe and learning rate) as the control; report test top-1 and MACs of all four.
With ``--distill`` both fine-tunings learn from the parent's outputs too (the parent teaching itself is the
control: the same loss, the same extra training).

    python bench/prune_finetune.py runs/x/resnet-56/best.pt --amount 0.5 --epochs 3
        # writes bench/results/prune/finetune.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import RESULTS, write_result
from resnets.engine.checkpoint import load_training_checkpoint
from resnets.engine.evaluate import load_checkpoint_and_data
from resnets.machine import machine_info
from resnets.prune import finetune, prune_checkpoint, size_of, split_top1


def control(parent: str, epochs: float, lr_factor: float, folder: Path, distill: bool) -> dict:
    """The parent fine-tuned exactly as the pruned network is."""
    start = time.perf_counter()
    config = load_training_checkpoint(parent)["config"]
    best = finetune(Path(parent), config, epochs, lr_factor, folder, progress=False,
                    teachers=[parent] if distill else None)
    loaded = load_checkpoint_and_data(best, None, None)
    size = loaded.checkpoint.get("crop_size") or loaded.checkpoint["image_size"]
    return {**size_of(loaded.model, size), "epochs": epochs, "top1": split_top1(loaded.model, loaded),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--amount", type=float, default=0.5)
    p.add_argument("--multiple", type=int, default=8)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr-factor", type=float, default=0.1)
    p.add_argument("--distill", action="store_true", help="fine-tune both learning from the parent's outputs")
    p.add_argument("--work", default="runs/prune-finetune", help="where the networks are written")
    p.add_argument("--out", default=str(RESULTS / "prune"))
    args = p.parse_args()
    work = Path(args.work)
    start = time.perf_counter()
    pruned = prune_checkpoint(args.checkpoint, work / "pruned.pt", args.amount, multiple=args.multiple,
                              finetune_epochs=args.epochs, lr_factor=args.lr_factor, distill=args.distill,
                              progress=False)
    pruned["seconds"] = round(time.perf_counter() - start, 1)
    parent = control(args.checkpoint, args.epochs, args.lr_factor, work / "parent-finetune", args.distill)
    test = {k: v["top1"]["test"] for k, v in (("parent", pruned["before"]), ("pruned", pruned["finetuned"]),
                                              ("parent_finetuned", parent))}
    write_result("finetune", {
        "command": f"python bench/prune_finetune.py CHECKPOINT --amount {args.amount} --multiple {args.multiple} "
                   f"--epochs {args.epochs:g} --lr-factor {args.lr_factor:g}" + (" --distill" if args.distill else ""),
        "machine": machine_info(), "pruned": pruned, "parent_finetuned": parent,
        "macs_removed": round(1 - pruned["pruned"]["macs"] / pruned["before"]["macs"], 4),
        "test_top1": test,
        "gap_to_parent": round(test["parent"] - test["pruned"], 2),
        "gap_to_parent_finetuned": round(test["parent_finetuned"] - test["pruned"], 2)}, args.out)


if __name__ == "__main__":
    main()
