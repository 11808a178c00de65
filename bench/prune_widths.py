"""Whether rounding the widths a pruned network keeps to a multiple of 8 pays: images per second of each
network whole, with 30% of its inner channels removed as they fall (odd widths), and rounded with
``--multiple 8``, in the fastest float32 mode, all timed in turns in one run.

    python bench/prune_widths.py                   # writes bench/results/prune/widths.json
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch

from common import RESULTS, write_result
from resnets.benchmark.deploy import thinner
from resnets.inference import fastest_mode, prepare_inference
from resnets.machine import machine_info
from resnets.models import create_model
from resnets.models.channels import inner_channels
from resnets.prune import size_of
from resnets.timing import time_interleaved

NETWORKS = (("resnet20", 32, 64), ("resnet56", 32, 64), ("resnet18", 224, 16))


def widths_row(name: str, size: int, batch: int, amount: float, multiple: int, repeats: int) -> dict:
    parent = create_model(name, num_classes=10 if size == 32 else 1000).eval()
    nets = {"whole": parent, f"pruned {amount:.0%}": thinner(copy.deepcopy(parent), amount),
            f"pruned {amount:.0%}, multiple {multiple}": thinner(copy.deepcopy(parent), amount, multiple)}
    x = torch.randn(batch, 3, size, size)
    mode = fastest_mode(float32=True)
    runners = {k: prepare_inference(m, mode, x) for k, m in nets.items()}
    timings = time_interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, repeats)
    return {"network": name, "input_size": size, "batch": batch, "mode": mode, "variants": {
        k: {"widths": sorted({r.width for r in inner_channels(m).values()}), "macs": size_of(m, size)["macs"],
            "images_per_s": round(batch / timings[k].median_s, 1)} for k, m in nets.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--amount", type=float, default=0.3)
    p.add_argument("--multiple", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "prune"))
    args = p.parse_args()
    rows = [widths_row(n, s, b, args.amount, args.multiple, args.repeats) for n, s, b in NETWORKS]
    for row in rows:
        v = list(row["variants"].values())
        row["rounded_over_odd"] = round(v[2]["images_per_s"] / v[1]["images_per_s"], 3)
    write_result("widths", {"command": "python bench/prune_widths.py", "machine": machine_info(), "rows": rows,
                            "median_rounded_over_odd": statistics.median(r["rounded_over_odd"] for r in rows)},
                 args.out)


if __name__ == "__main__":
    main()
