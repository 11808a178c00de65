"""Keras ResNet50 weights (``keras.applications``; the original Caffe model of He et al.) from a TensorFlow.js
layers model (``model.json`` + weight shards) or a Keras ``.h5`` file, in this project's ``resnet50`` layout.

That network is ResNet v1: the stride of a downsampling bottleneck sits in its first 1x1 convolution
(``stride_in_1x1=True``); its convolutions have biases and its batch norms ``eps=1e-3``, both folded exactly
into our batch norms (a conv bias shifts the mean the batch norm subtracts; the variance absorbs the eps
difference). It expects "caffe" inputs: BGR channels, the ImageNet mean subtracted, no scaling; the channel
order is folded into the first convolution and the rest is the normalisation recorded with the weights
(mean = the caffe mean / 255, std = 1 / 255 on ``x / 255`` inputs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import CheckpointError

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # what keras' preprocess_input("caffe") subtracts, in RGB order
KERAS_EPS, TORCH_EPS = 1e-3, 1e-5
STAGES = {"resnet50": (3, 4, 6, 3)}
MODEL_ARGS = {"stride_in_1x1": True}


def read_tfjs(model_json: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The Keras topology and the named weights of a TensorFlow.js layers model."""
    path = Path(model_json)
    try:
        meta = json.loads(path.read_text())
        topology, manifest = meta["modelTopology"], meta["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a TensorFlow.js layers model.json ({type(e).__name__}: {e})") from None
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            blob = b"".join((path.parent / p).read_bytes() for p in group["paths"])
        except OSError as e:
            raise CheckpointError(f"weight file missing beside {path}: {e.filename}") from None
        offset = 0
        for spec in group["weights"]:
            array, offset = _tfjs_array(blob, offset, spec)
            weights[spec["name"]] = array
        if offset != len(blob):
            raise CheckpointError(f"the weight files of {path} hold {len(blob)} bytes, the manifest {offset}: "
                                  "truncated or not the files it lists")
    return topology, weights


def _tfjs_array(blob: bytes, offset: int, spec: dict[str, Any]) -> tuple[np.ndarray, int]:
    """One weight of a TF.js shard blob (float32, int32, or uint8/uint16-quantised), and the next offset."""
    shape = [int(d) for d in spec["shape"]]
    n = int(np.prod(shape)) if shape else 1
    q = spec.get("quantization")
    dtype = np.dtype(q["dtype"] if q else spec["dtype"]).newbyteorder("<")
    end = offset + n * dtype.itemsize
    if end > len(blob):
        raise CheckpointError(f"weight {spec['name']} runs past the end of the weight files (truncated)")
    a = np.frombuffer(blob[offset:end], dtype=dtype).reshape(shape)
    if q:
        a = a.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
    return a.astype(np.float32), end


def read_keras_h5(path: str | Path) -> dict[str, np.ndarray]:
    """The named weights (``layer/kernel`` ...) of a Keras ``.h5`` weights or model file."""
    try:
        import h5py
    except ImportError:
        raise CheckpointError("reading Keras .h5 files needs h5py: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            weights = {}
            for layer in root.attrs["layer_names"]:
                group = root[_text(layer)]
                for name in group.attrs["weight_names"]:
                    weights[_text(name).split(":")[0]] = np.asarray(group[_text(name)], dtype=np.float32)
            return weights
    except (OSError, KeyError) as e:
        raise CheckpointError(f"{path} is not a Keras weights file ({type(e).__name__}: {e})") from None


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def to_state_dict(weights: Mapping[str, np.ndarray], model: str = "resnet50",
                  bgr_input: bool = True) -> dict[str, torch.Tensor]:
    """Keras ResNet weights by Keras layer name as our ``model``'s state dict (``stride_in_1x1=True``)."""
    if model not in STAGES:
        raise CheckpointError(f"Keras ResNet weights convert to {', '.join(STAGES)}, not {model}")
    out: dict[str, torch.Tensor] = {}
    _conv_bn(out, weights, "conv1", "bn_conv1", "conv1", "bn1")
    if bgr_input:  # the network was trained on BGR images: read RGB ones in the reverse channel order
        out["conv1.weight"] = out["conv1.weight"].flip(1).contiguous()
    for s, blocks in enumerate(STAGES[model], start=2):
        for i, letter in enumerate("abcdef"[:blocks]):
            keras, ours = f"{s}{letter}", f"layer{s - 1}.{i}"
            for part, n in zip("abc", (1, 2, 3)):
                _conv_bn(out, weights, f"res{keras}_branch2{part}", f"bn{keras}_branch2{part}", f"{ours}.conv{n}",
                         f"{ours}.bn{n}")
            if letter == "a":
                _conv_bn(out, weights, f"res{keras}_branch1", f"bn{keras}_branch1", f"{ours}.downsample.0",
                         f"{ours}.downsample.1")
    out["fc.weight"] = torch.from_numpy(_get(weights, "fc1000/kernel").T.copy())
    out["fc.bias"] = torch.from_numpy(_get(weights, "fc1000/bias").copy())
    return out


def _get(weights: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        raise CheckpointError(f"no weight {key!r}: not the Keras ResNet50 layout (its layers are named conv1, "
                              "bn_conv1, res2a_branch2a, ..., fc1000)")
    return np.asarray(weights[key], dtype=np.float64)


def _conv_bn(out: dict[str, torch.Tensor], weights: Mapping[str, np.ndarray], conv: str, bn: str,
             our_conv: str, our_bn: str) -> None:
    """A Keras Conv2D (kernel ``(kh, kw, in, out)``, optional bias) and its BatchNormalization, folded."""
    kernel = _get(weights, f"{conv}/kernel")
    mean, var = _get(weights, f"{bn}/moving_mean"), _get(weights, f"{bn}/moving_variance")
    if f"{conv}/bias" in weights:
        mean = mean - _get(weights, f"{conv}/bias")  # BN(conv(x) + b) subtracts mean - b from conv(x)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    out[f"{our_conv}.weight"] = f32(kernel.transpose(3, 2, 0, 1))
    out[f"{our_bn}.weight"] = f32(_get(weights, f"{bn}/gamma"))
    out[f"{our_bn}.bias"] = f32(_get(weights, f"{bn}/beta"))
    out[f"{our_bn}.running_mean"] = f32(mean)
    out[f"{our_bn}.running_var"] = f32(var + KERAS_EPS - TORCH_EPS)  # 1 / sqrt(var + 1e-3) with torch's 1e-5
    out[f"{our_bn}.num_batches_tracked"] = torch.tensor(0)


def caffe_normalisation() -> tuple[list[float], list[float]]:
    """``(mean, std)`` on ``x / 255`` that give caffe's ``x - mean`` in [0, 255] units."""
    return [m / 255 for m in CAFFE_MEAN_RGB], [1 / 255] * 3
