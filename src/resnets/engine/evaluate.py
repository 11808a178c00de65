"""Evaluation of a training checkpoint, and a ``Predictor`` that classifies image files."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from PIL import Image

from ..data import AugmentConfig, BatchAugment, ImageData, ImageSet, load_data, take
from ..data.folder import IMAGE_EXTS, UnreadableImage, decode_image, unreadable
from ..data.datasets import is_flat_tree
from ..data.sources import class_mapping, images_of, labelled_images, relabel
from ..data.stream import default_workers
from ..inference import MODES, available_modes, fastest_mode, get_mode, prepare_inference
from ..errors import DataError, ResnetsError
from ..files import atomic_write
from ..machine import machine_info
from ..models.resnet import StagedNet
from ..models.source import Checkpoint
from .checkpoint import model_from_checkpoint
from .metrics import Metrics, classification_metrics
from .predict import evaluate_split, predict_logits, resolve_device

ImageInput = str | Path | bytes | Image.Image  # one image: a path, encoded bytes or a PIL image

log = logging.getLogger("resnets")


def _runner(model: torch.nn.Module, mode: str, device: torch.device, calibration: torch.Tensor | None = None,
            *, float32: bool = False, images: float = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The inference function for ``mode``, and the mode it runs. "auto" is ``fastest_mode`` for ``images``
    images of work (float32 modes only with ``float32``), and falls back to batch norm folded into float32
    where the ONNX or OpenVINO conversion fails. The ONNX modes export on ``calibration`` (normalised images),
    the int8 modes take their activation ranges from it."""
    if mode == "auto":  # a compiled package already in the cache for this image shape is used
        shape = None if calibration is None else tuple(calibration.shape[1:])
        mode = fastest_mode(device, float32=float32, model=model, shape=shape, images=images)
        engine = get_mode(mode).engine
        if engine in ("onnxruntime", "openvino"):
            try:
                run = prepare_inference(model, mode, calibration)
                if calibration is not None:
                    run(calibration[:1])  # OpenVINO converts on its first call: an error shows now
                return run, mode
            except Exception as e:  # an architecture or operator the exporter cannot take
                log.warning("%s conversion failed (%s: %s); running in PyTorch",
                            "ONNX" if engine == "onnxruntime" else "OpenVINO", type(e).__name__, e)
                mode = "fused"
    if device.type != "cpu" and mode not in ("eager", "channels_last", "fused", "bf16"):
        raise ResnetsError(f"inference mode {mode!r} runs on the CPU only")
    return prepare_inference(model.to(device), mode, calibration), mode


@dataclass
class CheckpointData:
    """A checkpoint's evaluation model with the dataset it was trained on (or ``data``), split the same way,
    and the normalisation it expects."""

    model: StagedNet
    checkpoint: dict[str, Any]
    dataset: ImageData
    aug: BatchAugment


def source_name(checkpoint: str | Path | Checkpoint) -> str:
    """How a checkpoint was named: a path, a weights tag, or the source of one already read."""
    return checkpoint.source if isinstance(checkpoint, Checkpoint) else str(checkpoint)


def source_label(checkpoint: str | Path) -> str:
    """A short name for a checkpoint in tables and figures: the run folder of a ``best.pt`` or ``last.pt``,
    else the file name without its suffix, else the weights name or tag as given."""
    path = Path(str(checkpoint))
    if path.name in ("best.pt", "last.pt") and path.parent.name:
        return path.parent.name
    return path.stem if path.suffix in (".pt", ".pth", ".safetensors") else path.name


def distinct_labels(checkpoints: Sequence[str | Path]) -> list[str]:
    """``source_label`` of each checkpoint, numbered where two would read the same."""
    labels = [source_label(c) for c in checkpoints]
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def load_checkpoint_and_data(checkpoint: str | Path | Checkpoint, data: str | None = None,
                             data_root: str | None = None) -> CheckpointData:
    """The model of ``checkpoint`` and its data; a dataset with other classes or channels is refused."""
    model, ckpt = model_from_checkpoint(checkpoint)
    cfg = ckpt["config"]
    flat = data is not None and is_flat_tree(Path(data))  # class folders only: every image is evaluated
    dataset = load_data(data or cfg["data"], root=data_root or cfg.get("data_root"),
                        image_size=ckpt["image_size"], val_size=0 if flat else cfg.get("val_size"),
                        stream=cfg.get("stream"), crop_size=ckpt.get("crop_size"))
    if flat:
        dataset.test = dataset.train
        dataset.splits["test"] = f"every image of {data} ({len(dataset.test)} images)"
    if "classes" in ckpt.get("inferred", ()) and len(dataset.classes) == len(ckpt["classes"]) != 1000:
        ckpt["classes"] = list(dataset.classes)  # a plain state dict's outputs are the data's classes, in order
    if dataset.classes != ckpt["classes"]:
        mapping = class_mapping(dataset.classes, ckpt["classes"], ckpt.get("wnids"))
        if mapping is None:
            def show(c: list[str]) -> str:
                return f"{len(c)} classes ({', '.join(c[:4])}{', ...' if len(c) > 4 else ''})"

            raise ResnetsError(f"checkpoint {source_name(checkpoint)} was trained on {show(ckpt['classes'])}, "
                               f"but the data has {show(dataset.classes)}")
        relabel(dataset, mapping, ckpt["classes"])
    if dataset.in_chans != ckpt["in_chans"]:
        raise ResnetsError(f"checkpoint expects {ckpt['in_chans']}-channel images, the data has {dataset.in_chans}")
    return CheckpointData(model, ckpt, dataset, checkpoint_augment(ckpt))


def checkpoint_augment(ckpt: dict[str, Any]) -> BatchAugment:
    """How a checkpoint's model sees images: its evaluation crop and its normalisation."""
    crops = AugmentConfig(crop_size=ckpt.get("crop_size"), test_size=ckpt.get("test_size"),
                          test_crop_pct=ckpt.get("test_crop_pct"))
    return BatchAugment(crops, ckpt["mean"], ckpt["std"], len(ckpt["classes"]))


def check_split(split: str) -> None:
    if split not in ("train", "val", "test"):
        raise ResnetsError(f"split must be train, val or test, got {split!r}")


def calibration_images(loaded: CheckpointData, n: int = 512) -> torch.Tensor:
    """``n`` class-balanced training images, normalised as the model sees them: int8 calibration data."""
    if n < 1:
        raise ResnetsError(f"int8 calibration needs at least 1 image, got {n}")
    return loaded.aug.eval(images_of(take(loaded.dataset.train, n, seed=1), n))


def split_of(dataset: ImageData, split: str) -> ImageSet:
    """One split of ``dataset`` by name, with a clear error for a missing or unknown one."""
    check_split(split)
    subset = getattr(dataset, split)
    if subset is None or len(subset) == 0:
        has = ", ".join(f"{s} ({len(getattr(dataset, s))} images)" for s in ("train", "val", "test")
                        if getattr(dataset, s) is not None and len(getattr(dataset, s)))
        raise DataError(f"{dataset.name} has no images in a {split} split: choose one it has with --split: {has}")
    return subset


def evaluate(checkpoint: str | Path | Checkpoint, data: str | None = None, *, split: str = "test",
             tta_flip: bool = False, tta_translate: bool = False, batch_size: int = 256, device: str = "auto",
             data_root: str | None = None, out: str | Path | None = None, mode: str = "auto") -> Metrics:
    """Top-1/top-5, loss, per-class precision/recall/F1 and the confusion matrix of a checkpoint on a split.

    ``data`` defaults to the dataset the checkpoint was trained on, split the same way.
    ``mode`` is an inference mode (``inference.MODES``) or "auto", the fastest float32 one (ONNX Runtime
    where installed, else batch norm folded): the float32 numbers. With ``out``, writes
    ``metrics_<split>.json`` and ``confusion_<split>.png`` there.
    """
    check_split(split)  # before the data is loaded
    if batch_size < 1:
        raise ResnetsError(f"batch size must be >= 1, got {batch_size}")
    loaded = load_checkpoint_and_data(checkpoint, data, data_root)
    dataset = loaded.dataset
    dev = resolve_device(device)
    subset = split_of(dataset, split)
    # what the ONNX modes export on: the int8 modes calibrate on training images, float32 needs one image
    calibrated = mode in MODES and get_mode(mode).calibrated
    example = calibration_images(loaded) if calibrated else loaded.aug.eval(images_of(subset, 1))
    run, mode = _runner(loaded.model, mode, dev, example, float32=True)
    workers = loaded.checkpoint["config"].get("workers")
    metrics = evaluate_split(run, subset, dataset.classes, loaded.aug, split, batch_size=batch_size, device=dev,
                             tta_flip=tta_flip, tta_translate=tta_translate,
                             workers=default_workers() if workers is None else workers)
    if out is not None:
        from ..plots import plot_confusion

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"metrics_{split}.json").write_text(json.dumps({
            **metrics.summary(), "tta_flip": tta_flip, "tta_translate": tta_translate, "mode": mode,
            "checkpoint": source_name(checkpoint),
            "per_class": [vars(c) for c in metrics.per_class], "confusion": metrics.confusion}, indent=2))
        plot_confusion(metrics.confusion, dataset.classes, out / f"confusion_{split}.png", f"{split} split")
    return metrics


@dataclass
class ModeAccuracy:
    """One inference mode's accuracy against float32 eager on the same images."""

    mode: str
    top1: float
    top1_delta: float  # points: this mode's top-1 less float32 eager's
    agreement: float  # % of the images whose top-1 class is float32 eager's
    max_rel_diff: float  # max |logits - float32 eager's| / max |float32 eager's|


def compare_modes(checkpoint: str | Path | Checkpoint, modes: Sequence[str] | None = None, data: str | None = None, *,
                  split: str = "val", calibration: int = 512, batch_size: int = 256, data_root: str | None = None,
                  out: str | Path | None = None) -> list[ModeAccuracy]:
    """What each inference mode costs in accuracy: top-1 of ``checkpoint`` on ``split`` in each of ``modes``
    (float32 eager first, as the reference), with the difference from float32 in points, how often the
    top-1 class agrees with float32's, and the largest logit difference. ``modes`` defaults to the float32,
    bfloat16 (emulated where the CPU lacks it: slow, the same numbers) and ONNX Runtime modes, compiled ones
    left out; int8 calibrates on ``calibration`` class-balanced training images. On the CPU. With ``out``,
    writes ``modes_<split>.json`` there."""
    check_split(split)
    chosen = [m for m in modes or available_modes(compile=False, emulated_bf16=True) if m != "eager"]
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        raise ResnetsError(f"unknown inference mode {', '.join(unknown)}; expected some of {', '.join(MODES)}")
    loaded = load_checkpoint_and_data(checkpoint, data, data_root)
    evalset = split_of(loaded.dataset, split)
    calib = calibration_images(loaded, calibration) if any(get_mode(m).example for m in chosen) else None
    images, labels = labelled_images(evalset, len(evalset))  # each mode sees the same images: decoded once
    logits = {mode: predict_logits(_runner(loaded.model, mode, torch.device("cpu"), calib)[0], images,
                                   loaded.aug, batch_size=batch_size) for mode in ["eager", *dict.fromkeys(chosen)]}
    reference = logits["eager"]
    base = classification_metrics(reference, labels, loaded.dataset.classes, split).top1
    rows = []
    for mode, y in logits.items():
        top1 = classification_metrics(y, labels, loaded.dataset.classes, split).top1
        agree = 100.0 * (y.argmax(1) == reference.argmax(1)).float().mean().item()
        diff = ((y - reference).abs().max() / reference.abs().max()).item()
        rows.append(ModeAccuracy(mode, top1, top1 - base, agree, diff))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"checkpoint": source_name(checkpoint), "split": split, "images": len(evalset),
                  "calibration_images": len(calib) if calib is not None else 0, "machine": machine_info(),
                  "default_mode": fastest_mode(), "modes": [vars(r) for r in rows]}
        atomic_write(out / f"modes_{split}.json", lambda f: f.write(json.dumps(report, indent=2).encode() + b"\n"))
    return rows


def format_modes(rows: Sequence[ModeAccuracy]) -> str:
    """``compare_modes``'s rows as a table."""
    lines = [f"{'mode':<14} {'top-1':>7} {'delta':>7} {'agrees':>8} {'max rel. diff':>14}"]
    lines += [f"{r.mode:<14} {r.top1:>6.2f}% {r.top1_delta:>+7.2f} {r.agreement:>7.2f}% {r.max_rel_diff:>14.1e}"
              for r in rows]
    return "\n".join(lines)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, or found (recursively, sorted) inside the named folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"no such file or folder: {p}")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return found


class Predictor:
    """Classify images with a training checkpoint, a described weights file or a shipped weights name:
    ``Predictor("runs/x/best.pt").predict(["cat.jpg"])``, ``Predictor("resnet20_cifar10")``.

    ``mode`` is an inference mode (``inference.MODES``, int8 aside: it needs calibration images, see
    ``resnets quantize``); "auto" is ``inference.fastest_mode``: bfloat16 where the device runs it
    natively (AVX512-BF16/AMX, CUDA), else float32; on the CPU in OpenVINO where installed, else (float32)
    ONNX Runtime where installed, else PyTorch with batch norm folded; bfloat16 or folded float32 compiled
    ahead of time where an earlier run left the package, or where ``images`` (the work expected: ``math.inf``
    for a server) is enough for compiling to pay.
    """

    def __init__(self, checkpoint: str | Path | Checkpoint, device: str = "auto", tta_flip: bool = False,
                 mode: str = "auto", images: float = 0) -> None:
        model, ckpt = model_from_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.model = model  # float32, eval mode, on the CPU: for gradients (Grad-CAM) and export
        self.classes: list[str] = ckpt["classes"]
        self.in_chans: int = ckpt["in_chans"]
        self.image_size: int = ckpt["image_size"]
        # published weights record how their publisher resized (timm's a1_in1k: bicubic)
        recorded = ckpt.get("preprocessing")  # a dict for published weights; converted files describe it in words
        self.interpolation: str = recorded.get("interpolation", "bilinear") if isinstance(recorded, dict) \
            else "bilinear"
        size = ckpt.get("test_size") or ckpt.get("crop_size") or self.image_size
        traced = mode == "auto" or (get_mode(mode).example and not get_mode(mode).calibrated)
        example = torch.zeros(1, self.in_chans, size, size) if traced else None
        self.forward, self.mode = _runner(model, mode, self.device, example, images=images)  # what "auto" chose
        if mode == "auto" and example is not None and self.mode.startswith("compile"):
            # load or compile the package now, not mid-work
            log.info("running in %s (compiled once per network and image size, then cached)", self.mode)
            self.forward(example)
        self.tta_flip = tta_flip
        self.aug = checkpoint_augment(ckpt)

    def load(self, image: ImageInput) -> torch.Tensor:
        """One image (a path, encoded bytes or a PIL image) as the uint8 tensor the model was trained on."""
        if isinstance(image, Image.Image):
            import io

            buf = io.BytesIO()
            image.save(buf, format="PNG")
            image = buf.getvalue()
        try:
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            return torch.from_numpy(decode_image(data, self.image_size, self.in_chans, self.interpolation))
        except Exception as e:  # PIL's errors name a BytesIO; this names the image and says why in a few words
            raise UnreadableImage("the given image" if isinstance(image, bytes) else str(image), unreadable(e)) from e

    def predict_tensor(self, images: torch.Tensor, topk: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k ``(class, probability)`` for a uint8 batch ``(N, C, H, W)``."""
        return [[(c, q) for _, c, q in row] for row in self.predict_indexed(images, topk)]

    def predict_indexed(self, images: torch.Tensor, topk: int = 5) -> list[list[tuple[int, str, float]]]:
        """Top-k ``(class index, class, probability)`` for a uint8 batch (names alone can repeat: ImageNet has
        two "crane" classes)."""
        probs = predict_logits(self.forward, images, self.aug, device=self.device, tta_flip=self.tta_flip).softmax(1)
        return self.top(probs, topk)

    def top(self, probs: torch.Tensor, topk: int) -> list[list[tuple[int, str, float]]]:
        """Top-k ``(class index, class, probability)`` of each row of class probabilities ``(N, classes)``."""
        p, idx = probs.topk(min(topk, len(self.classes)), dim=1)
        return [[(j, self.classes[j], float(q)) for q, j in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(p, idx)]

    def top_classes(self, probs: torch.Tensor, topk: int) -> list[list[tuple[str, float]]]:
        """Top-k ``(class, probability)`` of each row of class probabilities ``(N, classes)``."""
        return [[(c, q) for _, c, q in row] for row in self.top(probs, topk)]

    def predict(self, images: ImageInput | Sequence[ImageInput], topk: int = 5,
                batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """Top-k ``(class, probability)`` per image (one image, or a sequence), in batches. An unreadable image
        raises ``DataError``; a uint8 batch tensor goes to ``predict_tensor``."""
        if isinstance(images, ImageInput):
            images = [images]
        results: list[list[tuple[str, float]]] = []
        for i in range(0, len(images), batch_size):
            batch: list[torch.Tensor] = []
            for image in images[i:i + batch_size]:
                name = image if isinstance(image, (str, Path)) else f"image {i + len(batch)}"
                if not isinstance(image, ImageInput):
                    raise DataError(f"cannot read {name}: a {type(image).__name__}, not a path, encoded bytes or "
                                    "a PIL image (predict_tensor takes uint8 tensors)")
                try:
                    batch.append(self.load(image))
                except Exception as e:
                    raise DataError(f"cannot read image {name}: {unreadable(e)}") from None
            results += self.predict_tensor(torch.stack(batch), topk)
        return results
