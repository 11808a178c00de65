"""Transfer learning: start from a pretrained network (this project's checkpoint, or a torchvision/timm
ResNet-family state dict), then fine-tune it (``resnets finetune``) or extract features and fit a linear
classifier on them (``resnets features --linear-probe``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import AugmentConfig, BatchAugment, ImageData, ImageSet, load_data, take
from .errors import ConfigError, ResnetsError
from .models import create_model, load_state_dict_into
from .models.loading import resolve_weights
from .models.source import Checkpoint, read_source
from .models.resnet import ResNet

log = logging.getLogger("resnets")


def describe_source(path: str | Path | Checkpoint, model: str | None = None) -> Checkpoint:
    """Read a pretrained file, a shipped weights name or published weights: this project's checkpoints and
    described weights name their model; a plain state dict needs ``model``."""
    return read_source(path, model=model).need("model", fix="--model (e.g. resnet50)")


def load_backbone(source: Checkpoint, in_chans: int) -> ResNet:
    """The pretrained network for ``in_chans`` input channels (the first convolution adapted) with no classifier."""
    model = source.need("model", fix="--model (e.g. resnet50)").model
    assert model is not None  # (need says so; for the type checker)
    net = create_model(model, num_classes=0, in_chans=in_chans, **source.model_args)
    if not isinstance(net, ResNet):
        raise ConfigError(f"{model} is not a ResNet classifier: transfer starts from the ResNet family's")
    load_state_dict_into(net, {k: v for k, v in source.state_dict.items() if not k.startswith("fc.")})
    return net.eval()


def input_stats(source: Checkpoint, data: ImageData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pretrained normalisation where the channels match, else the target data's own statistics."""
    if source.mean is not None and source.std is not None and len(source.mean) == data.in_chans:
        return source.mean, source.std
    return data.mean, data.std


@torch.no_grad()
def extract_features(net: ResNet, images: torch.Tensor, aug: BatchAugment, stage: int | None = None,
                     batch_size: int = 256, input_size: int | None = None, bf16: bool = False) -> np.ndarray:
    """Pooled embeddings (``stage=None``), or the feature map ``stage`` (timm's numbering: 0 the stem, 1..N the
    stages), for uint8 images;
    ``input_size``: the normalised images resized (bilinear) to it first, e.g. CIFAR's 32 pixels to the 224 an
    ImageNet network was trained at; ``bf16``: under bfloat16 autocast (fast where the CPU has it natively)."""
    if stage is not None:
        net.check_feature_indices([stage])
    out = []
    for i in range(0, len(images), batch_size):
        x = aug.eval(images[i:i + batch_size])
        if input_size is not None and x.shape[-1] != input_size:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if stage is None:
                feats = net.forward_head(net.forward_features(x), pre_logits=True)
            else:
                feats = net.forward_intermediates(x, [stage])[0]
        out.append(feats.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.num_features), np.float32)


def save_features(path: str | Path, features: dict[str, np.ndarray], sets: dict[str, ImageSet],
                  classes: list[str]) -> Path:
    """Features, labels and file names of each split, as ``.npz`` or ``.safetensors`` (file names and classes
    in its metadata)."""
    from .files import atomic_write

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        tensors = {f"{s}.features": np.ascontiguousarray(f) for s, f in features.items()}
        tensors.update({f"{s}.labels": sets[s].labels.numpy() for s in features})
        meta = {"classes": json.dumps(classes), **{f"{s}.files": json.dumps(sets[s].files or []) for s in features}}
        blob = save(tensors, metadata=meta)
        atomic_write(path, lambda f: f.write(blob))
    elif path.suffix == ".npz":
        arrays: dict[str, Any] = {"classes": np.array(classes)}  # (Any: numpy's savez stub takes no ndarray dict)
        for s, f in features.items():
            arrays.update({f"{s}.features": f, f"{s}.labels": sets[s].labels.numpy(),
                           f"{s}.files": np.array(sets[s].files or [])})
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    else:
        raise ConfigError(f"features are saved as .npz or .safetensors, not {path.suffix or path.name!r}")
    return path


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]],
                 max_iter: int = 2000) -> dict[str, float]:
    """Top-1 accuracy (%) of a logistic-regression classifier fitted on standardised training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    clf.fit(train_x.reshape(len(train_x), -1), train_y)
    return {name: 100.0 * float((clf.predict(x.reshape(len(x), -1)) == y).mean()) for name, (x, y) in evals.items()}


def features(checkpoint: str | Path, data: str, out: str | Path | None = None, *, model: str | None = None,
             stage: int | None = None, probe: bool = False, subset: int | None = None,
             data_root: str | None = None, val_size: float | None = None, input_size: int | None = None,
             bf16: bool = False) -> dict[str, Any]:
    """Embeddings of every image of ``data`` from a pretrained network (a checkpoint, a weights file or
    published weights such as ``resnet50.keras_in1k``), saved to ``out``; with ``probe``, the accuracy of a
    linear classifier trained on the training split's features. ``input_size`` and ``bf16``: see
    ``extract_features``."""
    source = describe_source(checkpoint, model)
    dataset = load_data(data, root=data_root, val_size=val_size, stream=False)  # the features are held in memory
    dataset.train = take(dataset.train, subset)
    net = load_backbone(source, dataset.in_chans)
    aug = BatchAugment(AugmentConfig(), *input_stats(source, dataset), dataset.num_classes)
    sets = {s: getattr(dataset, s) for s in ("train", "val", "test") if getattr(dataset, s) is not None}
    sets = {s: v for s, v in sets.items() if len(v)}
    feats = {s: extract_features(net, v.images, aug, stage, input_size=input_size, bf16=bf16) for s, v in sets.items()}
    result: dict[str, Any] = {"model": source.model, "data": dataset.name,
                              "dim": int(np.prod(feats["train"].shape[1:])),
                              "images": {s: len(v) for s, v in sets.items()}}
    if out is not None:
        result["out"] = str(save_features(out, feats, sets, dataset.classes))
    if probe:
        evals = {s: (feats[s], sets[s].labels.numpy()) for s in sets if s != "train"}
        result["linear_probe_top1"] = linear_probe(feats["train"], sets["train"].labels.numpy(), evals)
    return result


def finetune_config_args(source: str | Path, model: str | None) -> dict[str, Any]:
    """The ``TrainConfig`` settings that start training from ``source``."""
    path = resolve_weights(source)
    if not path.is_file():
        raise ResnetsError(f"no pretrained file {source} (give a checkpoint, a .pth/.pt/.safetensors state dict "
                           f"or a shipped weights name)")
    src = describe_source(path, model)
    return {"model": src.model, "model_args": src.model_args, "pretrained": str(path)}
