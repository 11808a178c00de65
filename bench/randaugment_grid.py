"""A picture of every RandAugment operation: rows are CIFAR-10 test images (tests/fixtures), columns the
operations at magnitude 9 (the increasing variants, each applied for sure), then three draws of the whole policy.

    python bench/randaugment_grid.py            # writes docs/figures/randaugment.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnets.data.randaugment import FUNCTIONS, INCREASING, OPS, RandAugmentPolicy, op_argument, rand_augment

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "fixtures" / "cifar10-test-200"


def grid(rows: int = 4, magnitude: float = 9.0, policy: str = "rand-m9-mstd0.5-inc1") -> np.ndarray:
    files = [sorted(d.glob("*.png"))[0] for d in sorted(p for p in IMAGES.iterdir() if p.is_dir())][:rows]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float()
    level, sign = torch.full((len(x),), magnitude), torch.ones(len(x))
    columns = [x] + [FUNCTIONS[name](x, op_argument(name, level, sign, name in INCREASING)).round().clamp(0, 255)
                     for name in OPS]
    columns += [rand_augment(x, RandAugmentPolicy.parse(policy), torch.Generator().manual_seed(s)) for s in range(3)]
    tiles = torch.stack(columns, 1)  # rows, columns, C, H, W
    pad = torch.nn.functional.pad(tiles, (1, 1, 1, 1), value=255.0)
    r, c, ch, h, w = pad.shape
    return pad.permute(0, 3, 1, 4, 2).reshape(r * h, c * w, ch).byte().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "randaugment.png"))
    args = p.parse_args()
    picture = Image.fromarray(grid())
    picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
