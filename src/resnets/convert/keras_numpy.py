"""A Keras functional model run in numpy (float64, channels last), layer by layer from its topology and
weights as Keras defines them: the independent reference a conversion is checked against. It knows the
layers of the ResNet family of ``keras.applications``."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import CheckpointError


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _same(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding: (before, after), the odd pixel after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str,
             value: float = 0.0) -> np.ndarray:
    """``(N, H', W', C, kh, kw)`` windows of a ``(N, H, W, C)`` input."""
    if padding == "same":
        x = _pad(x, *_same(x.shape[1], k[0], s[0]), *_same(x.shape[2], k[1], s[1]), value=value)
    return sliding_window_view(x, k, axis=(1, 2))[:, ::s[0], ::s[1]]


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, strides: tuple[int, int],
           padding: str) -> np.ndarray:
    kh, kw, _, _ = kernel.shape
    win = _windows(x, (kh, kw), strides, padding)  # N, H, W, C, kh, kw
    y = np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True)
    return y + bias if bias is not None else y


def _activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    raise CheckpointError(f"activation {name!r} is not supported by the numpy reference")


def _layer(kind: str, cfg: dict[str, Any], w: dict[str, np.ndarray], inputs: list[np.ndarray],
           softmax: bool) -> np.ndarray:
    x = inputs[0]
    if kind == "InputLayer":
        return x
    if kind == "ZeroPadding2D":
        (t, b), (left, r) = cfg["padding"]
        return _pad(x, t, b, left, r)
    if kind == "Conv2D":
        y = conv2d(x, w["kernel"], w.get("bias") if cfg.get("use_bias", True) else None,
                   tuple(cfg["strides"]), cfg["padding"])
        return _activation(y, cfg.get("activation", "linear"))
    if kind == "BatchNormalization":
        scale = w.get("gamma", 1.0) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
        return (x - w["moving_mean"]) * scale + w.get("beta", 0.0)
    if kind == "Activation":
        return _activation(x, cfg["activation"])
    if kind == "MaxPooling2D":
        return _windows(x, tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"]), cfg["padding"],
                        value=-np.inf).max(axis=(4, 5))
    if kind == "Add":
        return np.sum(inputs, axis=0)
    if kind == "GlobalAveragePooling2D":
        return x.mean(axis=(1, 2))
    if kind == "Dense":
        y = x @ w["kernel"] + (w["bias"] if cfg.get("use_bias", True) else 0)
        return _activation(y, cfg.get("activation", "linear") if softmax else "linear")
    raise CheckpointError(f"Keras layer {kind} is not supported by the numpy reference")


def run_keras(topology: Mapping[str, Any], weights: Mapping[str, np.ndarray], x: np.ndarray,
              softmax: bool = False) -> np.ndarray:
    """The model's output for channels-last images ``x`` (float64); the final softmax left out unless asked."""
    cfg = topology.get("model_config", topology)["config"]
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        layer, _, name = key.rpartition("/")
        by_layer.setdefault(layer, {})[name] = np.asarray(value, dtype=np.float64)
    outputs: dict[str, np.ndarray] = {}
    for layer in cfg["layers"]:
        name, kind = layer["config"]["name"], layer["class_name"]
        nodes = layer.get("inbound_nodes") or []
        inputs = [outputs[n[0]] for n in nodes[0]] if nodes else [np.asarray(x, dtype=np.float64)]
        outputs[name] = _layer(kind, layer["config"], by_layer.get(name, {}), inputs, softmax)
    return outputs[cfg["output_layers"][0][0]]
