"""Segmentation on real pixels: CIFAR-10 objects pasted onto other CIFAR-10 images, the masks made by the paste,
a segmentation network trained from scratch on them with ``resnets train --task segment``, its mIoU against the
trivial answer (everything background).

How the data is made (seeded, so it is the same every time):
- a 64x64 canvas: a CIFAR-10 image upscaled 2x (bilinear) as the background, class 0 ("background");
- one or two other CIFAR-10 images (32x32), each pasted whole at a random place inside the canvas; their pixels
  get the class of that image + 1 (a later paste covers an earlier one);
- training pairs from the CIFAR-10 training images, validation pairs from the test images (no pixel shared).
The object is the whole pasted square (CIFAR-10 has no object outlines): the network must find the square and
say what is in it.

    python bench/segment_demo.py [--train 3000 --val 500 --epochs 15]
        # writes bench/results/segment/pasted_cifar10.json, its curves and a figure of predictions
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import CIFAR10_LOSSLESS, RESULTS, campaign_paused, write_result
from resnets.data import load_data
from resnets.data.masks import encode_png, load_segmentation, voc_palette
from resnets.machine import machine_info

SIZE = 64


def pasted(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases (uint8 ``(n, 64, 64, 3)``) and their masks (``(n, 64, 64)``), made as the docstring says."""
    g = np.random.default_rng(seed)
    canvases = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        chosen = g.choice(len(images), 3, replace=False)
        background = F.interpolate(images[chosen[0]][None].float(), size=(SIZE, SIZE), mode="bilinear",
                                   align_corners=False)[0]
        canvases[i] = background.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        for j in chosen[1:1 + g.integers(1, 3)]:
            top, left = g.integers(0, SIZE - 32 + 1, 2)
            canvases[i, top:top + 32, left:left + 32] = images[j].permute(1, 2, 0).numpy()
            masks[i, top:top + 32, left:left + 32] = int(labels[j]) + 1
    return canvases, masks


def write_folder(folder: Path, canvases: np.ndarray, masks: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for i, (c, m) in enumerate(zip(canvases, masks)):
        (folder / "images" / f"{i:05d}.png").write_bytes(encode_png(c))
        (folder / "masks" / f"{i:05d}.png").write_bytes(encode_png(m, palette))


def make_data(root: Path, n_train: int, n_val: int) -> list[str]:
    cifar = load_data(str(CIFAR10_LOSSLESS), val_size=0)
    classes = ["background", *cifar.classes]
    for split, source, n, seed in (("train", cifar.train, n_train, 0), ("val", cifar.test, n_val, 1)):
        write_folder(root / split, *pasted(source.images, source.labels, n, seed))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return classes


def trivial_miou(root: Path) -> float:
    """mIoU of answering "background" everywhere: the background's IoU is its share of the pixels, every
    other class present scores 0."""
    data = load_segmentation(root)
    pixels = torch.cat([m.flatten() for m in data.val.masks])
    present = len(pixels.unique())
    return 100 * float((pixels == 0).float().mean()) / present


def figure(run: Path, root: Path, out: Path, n: int = 6) -> None:
    """Validation images, their true masks and the network's, side by side."""
    from resnets.engine.segment_predict import checkpoint_stats, segment, segmenter
    from resnets.plots import plt, save_figure

    model, ck = segmenter(run / "best.pt")
    data = load_segmentation(root)
    palette = np.array(voc_palette(), np.uint8).reshape(-1, 3)
    preds = dict(segment(model, data.val.images[:n], *checkpoint_stats(ck)))
    fig, axes = plt.subplots(3, n, figsize=(2 * n, 6.3))
    for i in range(n):
        shown = (data.val.images[i].permute(1, 2, 0).numpy(), palette[data.val.masks[i].numpy()],
                 palette[preds[i].argmax(0).numpy()])
        for row, (ax, img) in enumerate(zip(axes[:, i], shown)):
            ax.imshow(img)
            ax.axis("off")
            if i == 0:
                ax.set_title(("image", "pasted (truth)", "predicted")[row], fontsize=9, loc="left")
    save_figure(fig, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--epochs", type=float, default=15)
    p.add_argument("--model", default="fcn_resnet18")
    p.add_argument("--work", default="runs/segment-demo")
    p.add_argument("--out", default=str(RESULTS / "segment"))
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    classes = make_data(work / "data", args.train, args.val)
    command = [sys.executable, "-m", "resnets", "train", "--recipe", "segment", "--model", args.model,
               "--model-arg", "output_stride=16", "--data", str(work / "data"), "--epochs", str(args.epochs),
               "--batch-size", "32", "--crop-size", "64", "--scale-range", "0.75", "1.25",
               "--out", str(work / "run"), "--no-progress", "--no-tensorboard"]
    start = time.perf_counter()
    with campaign_paused():
        subprocess.run(command, check=True)
    report = json.loads((work / "run" / "report.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "pasted_cifar10_curves.png").write_bytes((work / "run" / "curves.png").read_bytes())
    figure(work / "run", work / "data", out / "pasted_cifar10.png")
    write_result("pasted_cifar10", {
        "what": "CIFAR-10 objects pasted onto upscaled CIFAR-10 images (64x64), masks from the paste; "
                "training pairs from the training images, validation pairs from the test images",
        "command": " ".join(["python bench/segment_demo.py", f"--train {args.train}", f"--val {args.val}",
                             f"--epochs {args.epochs:g}", f"--model {args.model}"]),
        "train_command": " ".join(command[1:]).replace(str(work), "WORK"),
        "classes": classes, "pairs": {"train": args.train, "val": args.val},
        "trivial_all_background_miou": round(trivial_miou(work / "data"), 3),
        "val": report["val"], "best_epoch": report["best_epoch"], "seconds": round(time.perf_counter() - start),
        "machine": machine_info(),
    }, out)


if __name__ == "__main__":
    main()
