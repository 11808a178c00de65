"""Why pretrained weights matter: a linear probe on the features of an ImageNet ResNet-50 for a small CIFAR-10
subset, against the best from-scratch training that takes the same wall time.

    python bench/imagenet_probe.py --cifar cifar-10-python.tar.gz [--weights resnet50.keras_in1k]
                                   [--train 2000 --test 1000]

- data: ``--train`` training images (class-balanced, seed 0) of the official CIFAR-10 training batches and the
  first ``--test`` images of the official test batch, as a PNG image folder (original pixels); no validation
  split: every setting below is fixed in advance, nothing is chosen on the test images;
- probe: ``resnets features WEIGHTS --input-size 224 --bf16 --linear-probe``: the 32-pixel images resized
  (bilinear) to 224, pooled ResNet-50 features (2,048), logistic regression on standardised features;
  its wall time (features of every image plus the fit) is the budget;
- from scratch, in the same budget: the ``cifar10-fast-sgd`` recipe (fastresnet8) and ResNet-20 (cosine, SGD 0.1),
  each with as many epochs as fit in the budget (from a timed one-epoch run), on the same images.

Writes bench/results/imagenet_probe.json.
"""
from __future__ import annotations

import argparse
import pickle
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import resnets
from resnets.machine import machine_info, native_bf16
from resnets.transfer import features

from common import RESULTS, write_result


def _batches(archive: Path) -> tuple[list[str], dict[str, dict]]:
    with tarfile.open(archive) as tf:
        files = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}
        meta = pickle.load(tf.extractfile(files["batches.meta"]), encoding="latin1")
        wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        return meta["label_names"], {n: pickle.load(tf.extractfile(files[n]), encoding="latin1") for n in wanted}


def make_subset(archive: Path, out: Path, n_train: int, n_test: int) -> Path:
    """``out/train/<class>/*.png`` (class-balanced, seed 0) and ``out/test/<class>/*.png`` (the first ``n_test``)."""
    classes, batches = _batches(archive)
    train_x = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    train_y = np.concatenate([batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)])
    rng = np.random.default_rng(0)
    picks = np.concatenate([rng.permutation(np.flatnonzero(train_y == c))[:n_train // len(classes)]
                            for c in range(len(classes))])
    test = batches["test_batch"]
    for split, xs, ys in (("train", train_x[picks], train_y[picks]),
                          ("test", test["data"][:n_test], np.asarray(test["labels"][:n_test]))):
        for i, (x, y) in enumerate(zip(xs, ys)):
            path = out / split / classes[y] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.reshape(3, 32, 32).transpose(1, 2, 0)).save(path)
    return out


def probe(weights: str, data: Path) -> dict:
    t0 = time.perf_counter()
    result = features(weights, str(data), val_size=0, probe=True, input_size=224, bf16=native_bf16())
    return {"weights": weights, "test_top1": round(result["linear_probe_top1"]["test"], 2),
            "feature_dim": result["dim"], "seconds": round(time.perf_counter() - t0, 1)}


def scratch(name: str, settings: dict, data: Path, budget: float, out: Path) -> dict:
    """``settings`` trained for as many epochs as fit in ``budget`` seconds, the whole run (set-up and the final
    evaluation included), as timed on a two-epoch run."""
    common = dict(data=str(data), val_size=0, progress=False, tensorboard=False, tta_flip=False, tta_translate=False)
    t0 = time.perf_counter()
    timed = resnets.train(resnets.make_config(None, **{**settings, **common, "epochs": 2, "out": str(out / "t")}))
    whole = time.perf_counter() - t0
    per_epoch = timed.history[1]["seconds"] - timed.history[0]["seconds"]
    epochs = max(1, int((budget - (whole - 2 * per_epoch)) / per_epoch))
    t0 = time.perf_counter()
    result = resnets.train(resnets.make_config(None, **{**settings, **common, "epochs": epochs,
                                                        "out": str(out / name)}))
    return {"method": name, "epochs": epochs, "test_top1": round(result.test.top1, 2),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cifar", required=True, help="CIFAR-10 in the official python layout (.tar.gz / .tar.xz)")
    p.add_argument("--weights", default="resnet50.keras_in1k")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_subset(Path(args.cifar), Path(tmp) / "cifar10-subset", args.train, args.test)
        probed = probe(args.weights, data)
        fast = resnets.engine.config.load_recipe("cifar10-fast-sgd")
        fast.pop("data"), fast.pop("val_size"), fast.pop("epochs")
        fast["batch_size"] = 256  # 2,000 images: 7 steps an epoch rather than 1 at 1,024
        runs = [scratch("cifar10-fast-sgd recipe (fastresnet8)", fast, data, probed["seconds"], Path(tmp)),
                scratch("resnet20, SGD 0.1 cosine", dict(model="resnet20", batch_size=128, lr=0.1,
                                                         weight_decay=5e-4), data, probed["seconds"], Path(tmp))]
    best = max(runs, key=lambda r: r["test_top1"])
    write_result("imagenet_probe", {
        "command": f"python bench/imagenet_probe.py --cifar CIFAR10 --weights {args.weights} "
                   f"--train {args.train} --test {args.test}",
        "machine": machine_info(), "train_images": args.train, "test_images": args.test,
        "linear_probe": probed, "from_scratch": runs, "best_from_scratch": best["method"],
        "probe_minus_best_scratch": round(probed["test_top1"] - best["test_top1"], 2)}, args.out)


if __name__ == "__main__":
    main()
