"""The streamed data pipeline: how fast it makes 224-pixel training crops, and how much memory a training run
takes as the data set grows.

    python bench/data.py [--photos FOLDER] [--out bench/results]     # writes data.json there

1. Throughput: training crops (random-resized 224, flip, normalised) per second from real-size JPEGs, with 0, 1
   and 2 worker processes, against a reference pipeline written as torchvision's is (PIL open -> full decode ->
   RandomResizedCrop -> flip -> ToTensor -> Normalize per image), in the same run and the same DataLoader. The
   photos are the JPEGs of ``--photos`` (e.g. a folder of ImageNet photos), else generated 500x375 photo-like
   JPEGs. Medians of 5 passes after a warm-up pass, the two pipelines in turns (a running campaign paused).
   Also ours reading the photos as ``resnets shard --resize-short 256`` stores them (the reference on the originals).
2. Memory: peak proportional set size (PSS, the process tree with its workers, sampled every 20 ms) of one epoch
   of ResNet-18 training at 64 pixels (stored at 80) on generated sets of 300 and 3,000 images (160x120 JPEGs),
   streamed and in memory.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common import RESULTS, campaign_paused, write_result
from resnets.data.augment import normalize
from resnets.data.stream import FileList, StreamLoader, StreamSet
from resnets.data.transforms import SampleTransform, rrc_box
from resnets.timing import time_interleaved
from resnets.machine import machine_info

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
BATCH = 32
PASSES = 9  # timed passes over the photos per pipeline, in turns, after one untimed pass


def photo_like(rng: np.random.Generator, w: int = 500, h: int = 375) -> Image.Image:
    """Smooth shapes and noise: compresses like a photo (about 30-60 kB at quality 90), unlike pure noise."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * x * rng.uniform(1, 3) + rng.uniform(0, 6)),
                     np.cos(5 * y * rng.uniform(1, 3) + rng.uniform(0, 6)),
                     np.sin(4 * (x + y) * rng.uniform(1, 3))], -1)
    arr = 127 + 90 * base + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_photos(folder: Path, n: int, classes: int = 10, seed: int = 0, size: tuple[int, int] = (500, 375)) -> Path:
    """An ImageFolder tree ``folder/train/<class>/*.jpg`` of ``n`` generated photos."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = folder / "train" / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        photo_like(rng, *size).save(d / f"{i:05d}.jpg", quality=90)
    return folder


class Reference(Dataset):
    """torchvision's training pipeline, written out: PIL decode, RandomResizedCrop(224), flip, ToTensor, Normalize."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng(i)
        with Image.open(self.files[i]) as img:
            img = img.convert("RGB")
            left, top, w, h = rrc_box(img.width, img.height, (0.08, 1.0), (3 / 4, 4 / 3), rng)
            img = img.resize((224, 224), Image.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255  # ToTensor
        return (x - MEAN[:, None, None]) / STD[:, None, None]  # Normalize


def throughput(files: list[str], workers: int, ours_files: list[str] | None = None) -> dict[str, float]:
    """Crops per second of the reference pipeline on ``files``, and of ours on ``ours_files`` (default: the same)."""
    n = len(files) - len(files) % BATCH
    ours_files = ours_files or files
    ref = DataLoader(Reference(files[:n]), batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)
    ours = StreamLoader(StreamSet(FileList(ours_files[:n], [0] * n), 256),
                        SampleTransform(256, 224, scale=(0.08, 1.0), flip=True), BATCH, shuffle=True, drop_last=True,
                        workers=workers)

    def run_ref() -> None:
        for _ in ref:
            pass

    def run_ours() -> None:
        for x, _ in ours.batches():
            normalize(x, MEAN, STD)  # what the training loop does to each batch

    t = time_interleaved({"reference": run_ref, "resnets": run_ours}, PASSES, warmup=1)  # in turns
    r = {"workers": workers, "reference_img_s": n / t["reference"].median_s, "resnets_img_s": n / t["resnets"].median_s}
    ours.close()
    r["ratio"] = r["resnets_img_s"] / r["reference_img_s"]
    return r


def _tree_pss(pid: int) -> int:
    """Proportional set size (bytes) of a process and all its descendants: pages that forked workers share
    with their parent count once, split between them."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(rollup.split("\nPss:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError):
            pass
    return total


def training_memory(folder: Path, stream: bool, out: Path) -> float:
    """Peak memory (MB, PSS of the process tree sampled every 20 ms) of one epoch of ResNet-18 training."""
    cmd = [sys.executable, "-m", "resnets", "train", "--data", str(folder), "--model", "resnet18", "--epochs", "1",
           "--batch-size", "32", "--image-size", "80", "--crop-size", "64", "--rrc-scale", "0.25", "1",
           "--workers", "1", "--val-size", "0", "--no-eval-test", "--no-progress", "--no-tensorboard",
           "--stream" if stream else "--in-memory", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, RESNETS_CACHE=str(out / "cache")))
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss(proc.pid))
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(proc.stderr.read())
    return peak / 1e6


def resized_copies(files: list[str], folder: Path) -> list[str]:
    """The photos as ``resnets shard --resize-short 256 --quality 90`` stores them."""
    from resnets.data.make_shards import _encode_jpeg, _thumbnail_and_image

    folder.mkdir(parents=True)
    out = []
    for i, f in enumerate(files):
        _, image = _thumbnail_and_image(Path(f).read_bytes(), 256)
        (folder / f"{i:05d}.jpg").write_bytes(_encode_jpeg(image, 90))
        out.append(str(folder / f"{i:05d}.jpg"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", help="a folder of real-size JPEGs for the throughput part")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--no-memory", action="store_true", help="the throughput part only")
    args = p.parse_args()
    torch.set_num_threads(1)  # the main process's share: one core per pipeline process, compared alike
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.photos:
            files = sorted(str(f) for f in Path(args.photos).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg"))
            source = f"{len(files)} JPEGs of {args.photos}"
        else:
            files = sorted(str(f) for f in make_photos(tmp / "photos", 128).rglob("*.jpg"))
            source = f"{len(files)} generated 500x375 JPEGs (quality 90)"
        sizes = [Image.open(f).size for f in files]
        resized = resized_copies(files, tmp / "resized")
        with campaign_paused() as quiet:  # a running training campaign waits while this times
            rows = [throughput(files, w) for w in (0, 1, 2)]
            rows_resized = [throughput(files, w, resized) for w in (0, 1, 2)]
        memory: dict[str, dict[str, float]] = {}
        for n in (() if args.no_memory else (300, 3000)):
            tree = make_photos(tmp / f"set{n}", n, size=(160, 120))
            memory[str(n)] = {mode: training_memory(tree, mode == "streamed", tmp / f"run{n}{mode}")
                              for mode in ("streamed", "in_memory")}
    growth = {mode: memory["3000"][mode] - memory["300"][mode] for mode in ("streamed", "in_memory")} if memory else {}
    record = {"machine": machine_info(), **quiet, "photos": source,
              "mean_photo_size": [float(np.mean([s[0] for s in sizes])), float(np.mean([s[1] for s in sizes]))],
              "batch": BATCH, "throughput": rows, "throughput_ours_on_resize_short_256": rows_resized,
              "memory_resnet18_64px_peak_pss_mb": memory, "memory_growth_300_to_3000_mb": growth,
              "command": "python bench/data.py " + " ".join(sys.argv[1:])}
    write_result("data", record, args.out)


if __name__ == "__main__":
    main()
