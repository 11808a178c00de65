"""``resnets convert SRC DEST.safetensors --model NAME``: ImageNet weights published elsewhere as a described
weights file of this project (architecture, the 1,000 class names and WordNet ids, the input normalisation),
which ``resnets predict / eval / serve / finetune`` and ``create_model(pretrained=...)`` take as they are.

Sources: a TensorFlow.js layers ``model.json`` or a Keras ``.h5`` of Keras' ResNet50 (checked against the
Keras graph run in numpy), or a torchvision / timm state dict (``.pth``, ``.safetensors``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.imagenet import imagenet_names, imagenet_wnids
from ..engine.checkpoint import save_weights
from ..errors import CheckpointError
from ..models import create_model
from ..models.loading import extract_state_dict, load_state_dict_into, read_checkpoint
from ..models import keras

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TOLERANCE = 1e-4  # largest logit difference from the source graph, relative to the largest logit


@dataclass
class Converted:
    """What ``convert`` wrote: the file, the source's kind and, for Keras sources, the check against it."""

    out: Path
    source: str
    max_abs_diff: float | None = None
    max_abs_logit: float | None = None


def convert(src: str | Path, dest: str | Path, model: str = "resnet50", *, check: bool = True,
            extra: dict[str, Any] | None = None) -> Converted:
    """Convert ``src`` into ``dest`` (a ``.safetensors`` file); see the module's description."""
    src, dest = Path(src), Path(dest)
    if dest.suffix != ".safetensors":
        raise CheckpointError(f"the converted weights are written as safetensors: name DEST *.safetensors, not {dest}")
    if not src.is_file():
        raise CheckpointError(f"no such file: {src}")
    if src.suffix == ".json" or src.suffix in (".h5", ".hdf5", ".keras"):
        topology, weights = keras.read_tfjs(src) if src.suffix == ".json" else (None, keras.read_keras_h5(src))
        kind = "tfjs-layers" if topology is not None else "keras-h5"
        state = keras.to_state_dict(weights, model)
        mean, std = keras.caffe_normalisation()
        args: dict[str, Any] = dict(keras.MODEL_ARGS)
        preprocessing = "caffe: BGR (folded into conv1), ImageNet mean subtracted, no scaling"
    else:
        kind, topology = "pytorch", None
        state = extract_state_dict(read_checkpoint(src))
        mean, std, args = IMAGENET_MEAN, IMAGENET_STD, dict[str, Any]()
        preprocessing = "RGB, x / 255, ImageNet mean and std"
    net = create_model(model, **args).eval()
    load_state_dict_into(net, state, adapt=False)
    classes = net.get_submodule("fc").out_features
    if classes != 1000:
        raise CheckpointError(f"{src} has {classes} classes, not the 1,000 of ImageNet")
    result = Converted(dest, kind)
    if check and topology is not None:
        result.max_abs_diff, result.max_abs_logit = check_against_keras(net, topology, weights, mean, std)
        if result.max_abs_diff > TOLERANCE * result.max_abs_logit:
            raise CheckpointError(f"the converted network differs from {src} by {result.max_abs_diff:.2g} in the "
                                  "logits: not the Keras ResNet50 it was taken for")
    ckpt = {"config": {"model": model, "model_args": args, "data": "imagenet", "val_size": None},
            "classes": imagenet_names(), "mean": mean, "std": std, "in_chans": 3, "image_size": 256,
            "crop_size": 224, "model": {k: v.contiguous() for k, v in net.state_dict().items()}}
    save_weights(dest, ckpt, {"wnids": imagenet_wnids(), "source": {"file": src.name, "format": kind},
                              "preprocessing": preprocessing, **(extra or {})})
    return result


def check_against_keras(net: torch.nn.Module, topology: dict[str, Any], weights: dict[str, np.ndarray],
                        mean: list[float], std: list[float], seed: int = 0) -> tuple[float, float]:
    """Largest logit difference between ``net`` (float64) and the Keras graph run in numpy, on one random
    image in [0, 255], and the largest logit."""
    from .keras_numpy import run_keras

    image = np.random.default_rng(seed).uniform(0, 255, (1, 224, 224, 3))
    reference = run_keras(topology, weights, image[..., ::-1] - np.array(keras.CAFFE_MEAN_RGB[::-1]))
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy()) / 255
    x = (x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(std, dtype=torch.float64).view(
        1, 3, 1, 1)
    with torch.no_grad():
        ours = net.double()(x).numpy()
    net.float()
    return float(np.abs(ours - reference).max()), float(np.abs(reference).max())


def describe(result: Converted) -> str:
    check = (f"; logits within {result.max_abs_diff:.1e} of the source graph run in numpy (largest logit "
             f"{result.max_abs_logit:.1f})" if result.max_abs_diff is not None else "")
    return f"wrote {result.out} ({result.source}{check})"


def summary_json(result: Converted) -> str:
    return json.dumps({"out": str(result.out), "source": result.source, "max_abs_diff": result.max_abs_diff,
                       "max_abs_logit": result.max_abs_logit})
