"""Package a finished campaign run as weights that ship inside the package (src/resnets/weights/NAME.safetensors).

    python bench/ship_weights.py resnet20-cosine-s0 --as resnet20_cifar10
    python bench/ship_weights.py resnet56-cosine-s0 --as resnet56_cifar10

The run's final weights (bench/results/campaign/RUN.safetensors: the last step of its 64,000 iterations,
nothing chosen on the test set) are stored in float16 (half the size; every tensor is widened back to float32
when read), described by the run's recipe, seed, iterations, data and validation top-1, and the test top-1
of the float16 file itself, evaluated once here on the official test set.
"""
from __future__ import annotations

import argparse
import json

import torch

import resnets
from resnets.engine.checkpoint import load_training_checkpoint
from resnets.models.loading import WEIGHTS_DIR, save_described

from common import CIFAR10_LOSSLESS, RESULTS

CAMPAIGN = RESULTS / "campaign"


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a finished run of bench/campaign.yaml")
    p.add_argument("--as", dest="name", required=True, help="the shipped name, e.g. resnet20_cifar10")
    p.add_argument("--data", default=str(CIFAR10_LOSSLESS), help="the CIFAR-10 archive to evaluate on")
    args = p.parse_args()

    result = json.loads((CAMPAIGN / f"{args.run}.json").read_text())
    ckpt = load_training_checkpoint(CAMPAIGN / result["weights"])
    meta = {k: ckpt[k] for k in ("classes", "mean", "std", "in_chans", "image_size", "crop_size")}
    # evaluated by default on the official CIFAR-10 (--data-root); the split size is the data's default
    meta["config"] = {**ckpt["config"], "data": "cifar10", "val_size": None}
    meta.update({k: result[k] for k in ("recipe", "seed", "iterations", "val_top1", "final_train_error")},
                trained_on=f"CIFAR-10, original pixels ({result['splits']['train']})",
                campaign_result=f"bench/results/campaign/{args.run}.json", campaign_test_top1=result["test_top1"],
                command=f"python bench/ship_weights.py {args.run} --as {args.name}", stored_dtype="float16")
    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_described(out, half(ckpt["model"]), {**meta, "test_top1": None})
    test = resnets.evaluate(out, args.data, split="test", mode="eager")  # the file as users get it
    save_described(out, half(ckpt["model"]), {**meta, "test_top1": round(test.top1, 2)})
    print(json.dumps({"weights": str(out), "bytes": out.stat().st_size, "test_top1": round(test.top1, 2),
                      "campaign_test_top1": result["test_top1"], "n": test.n}, indent=2))


if __name__ == "__main__":
    main()
