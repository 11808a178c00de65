"""Training a segmentation network (``resnets train --task segment``), top to bottom: ``_setup`` reads the
image/mask pairs and makes the network and optimiser; each epoch augments pairs identically (rescale, crop,
flip), steps on the per-pixel cross-entropy (plus the auxiliary head's, weighted), validates mIoU and writes
``best.pt`` (by validation mIoU) and ``last.pt`` (resumable, exactly: the epoch's order and every batch's
augmentation follow from the seed); ``_report`` evaluates the best weights once in float32."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.joint import JointAugment
from ..data.loader import batch_generator
from ..data.masks import IGNORE, SegmentationData, load_segmentation
from ..errors import CheckpointError, ConfigError, ResnetsError
from ..files import atomic_write
from ..machine import native_bf16
from ..models import create_model, get_model_spec
from ..models.loading import load_state_dict_into
from .checkpoint import load_training_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .optim import lr_factor, make_optimizer, set_lr
from .predict import autocast, resolve_device
from .runlog import RunLog
from .segment_metrics import SegMetrics, pixel_confusion
from .segment_predict import evaluate_masks

log = logging.getLogger("resnets")

# Settings of image classification that a segmentation run does not use, with the value that means "off".
CLASSIFICATION_ONLY: dict[str, Any] = {
    "mixup": 0.0, "cutmix": 0.0, "randaugment": None, "jitter": 0.0, "teachers": [], "ema_decay": None,
    "lookahead_every": 0, "folds": 0, "aug_repeats": 1, "rrc_scale": None, "alternate_flips": False,
    "loss": "ce", "label_smoothing": 0.0, "tta_flip": False, "tta_translate": False, "freeze_stages": None,
    "test_size": None, "stream": None, "sync_bn": False}
MAX_CROP = 480  # the default crop's largest side (torchvision's segmentation reference)


@dataclass
class SegResult:
    out_dir: Path
    best_epoch: int
    best_miou: float
    val: SegMetrics
    test: SegMetrics | None
    history: list[dict[str, Any]]
    seconds: float


@dataclass
class SegRun:
    cfg: TrainConfig
    device: torch.device
    data: SegmentationData
    aug: JointAugment
    model: nn.Module
    optimizer: torch.optim.Optimizer
    out: Path
    meta: dict[str, Any]
    start_time: float
    epoch: int = 0
    step: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.data.train) // self.cfg.batch_size)

    @property
    def total_steps(self) -> int:
        return max(1, round(self.cfg.epochs * self.steps_per_epoch))

    def state(self) -> dict[str, Any]:
        return {**self.meta, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(), "epoch": self.epoch, "step": self.step, "best_val_miou": self.best_miou,
                "best_epoch": self.best_epoch, "history": self.history}


def check_segment_config(cfg: TrainConfig) -> None:
    """A segmentation network, trained without the settings that only classification uses."""
    if get_model_spec(cfg.model).family != "segmentation":
        raise ConfigError(f"{cfg.model} is a classifier: --task segment trains a segmentation network "
                          f"(e.g. fcn_resnet50, deeplabv3_resnet50; resnets list shows them)")
    for name, off in CLASSIFICATION_ONLY.items():
        if getattr(cfg, name) != off:
            raise ConfigError(f"setting {name!r} is for image classification: leave it out with --task segment")


def _placement(cfg: TrainConfig) -> tuple[TrainConfig, torch.device]:
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ResnetsError("segmentation trains in one process: leave out --nproc")
    device = resolve_device(cfg.device)
    if cfg.precision == "auto":
        cfg = dataclasses.replace(cfg, precision="bf16" if native_bf16(device) else "fp32")
    return cfg, device


def _setup(cfg: TrainConfig, resume: str | Path | None) -> SegRun:
    ckpt = None
    if resume is not None:
        ckpt = load_training_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{resume} has no optimizer state: resume from a run's last.pt")
        cfg = TrainConfig(**{**ckpt["config"], "precision": ckpt.get("precision_requested", "auto")})
    requested = cfg.precision
    check_segment_config(cfg)
    start = time.perf_counter()
    cfg, device = _placement(cfg)
    torch.manual_seed(cfg.seed)
    data = load_segmentation(cfg.data, val_size=cfg.val_size, seed=cfg.seed)
    if cfg.subset is not None:
        data.train = data.train.subset(list(range(min(cfg.subset, len(data.train)))))
    crop = cfg.crop_size or min(MAX_CROP, *(min(i.shape[1:]) for i in data.train.images))
    aug = JointAugment(crop, data.mean, data.std, (cfg.scale_range[0], cfg.scale_range[1]), cfg.hflip)
    model = create_model(cfg.model, num_classes=data.num_classes, pretrained=cfg.pretrained, **cfg.model_args)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    meta = {"config": cfg.to_dict(), "task": "segment", "classes": data.classes, "mean": list(data.mean),
            "std": list(data.std), "in_chans": 3, "image_size": crop, "crop_size": crop, "splits": data.splits,
            "format": "resnets-train-v1", "precision_requested": requested}
    run = SegRun(cfg, device, data, aug, model, make_optimizer(model, cfg), cfg.out_dir(), meta, start)
    run.out.mkdir(parents=True, exist_ok=True)
    if ckpt is not None:
        load_state_dict_into(model, ckpt["model"], adapt=False)
        run.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        run.epoch, run.step, run.best_miou, run.best_epoch = (ckpt["epoch"], ckpt["step"], ckpt["best_val_miou"],
                                                              ckpt["best_epoch"])
        run.history = list(ckpt["history"])
        log.info("resumed from %s at epoch %d (step %d)", resume, run.epoch, run.step)
    return run


def segmentation_loss(out: dict[str, torch.Tensor], target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Per-pixel cross-entropy of the head (ignored pixels aside), plus ``aux_weight`` times the auxiliary
    head's where the network has one."""
    loss = F.cross_entropy(out["out"].float(), target, ignore_index=IGNORE)
    if "aux" in out:
        loss = loss + aux_weight * F.cross_entropy(out["aux"].float(), target, ignore_index=IGNORE)
    return loss


def train_step(run: SegRun, images: list[torch.Tensor], masks: list[torch.Tensor], i: int
               ) -> tuple[float, torch.Tensor]:
    """One optimiser step on batch ``i`` of the epoch; returns the loss and the pixel confusion of the batch."""
    cfg = run.cfg
    epoch = run.step / run.steps_per_epoch
    set_lr(run.optimizer, cfg.lr, lr_factor(cfg, epoch), epoch)
    x, target = run.aug.batch(images, masks, batch_generator(cfg.seed, run.epoch, i))
    x, target = x.to(run.device), target.to(run.device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, cfg.precision):
        out = run.model(x)
    loss = segmentation_loss(out, target, cfg.aux_weight)
    if not torch.isfinite(loss):
        raise ResnetsError(f"loss became {loss.item()} at step {run.step}; stopped (the last good checkpoint is "
                           f"{run.out / 'last.pt'}); try a lower --lr or --clip-grad")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.optimizer.step()
    return float(loss), pixel_confusion(out["out"].detach().argmax(1), target, run.data.num_classes)


def train_epoch(run: SegRun) -> dict[str, Any]:
    """The epoch's steps, then validation and the checkpoints; returns its metrics row."""
    cfg, train = run.cfg, run.data.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + run.epoch))
    k = run.data.num_classes
    confusion, loss_sum, steps, t0 = torch.zeros(k, k, dtype=torch.long), 0.0, 0, time.perf_counter()
    run.model.train()
    for i in range(run.steps_per_epoch):
        if run.step >= run.total_steps:
            break
        chosen = order[i * cfg.batch_size:(i + 1) * cfg.batch_size].tolist()
        loss, batch_confusion = train_step(run, [train.images[j] for j in chosen], [train.masks[j] for j in chosen], i)
        loss_sum, steps, run.step = loss_sum + loss, steps + 1, run.step + 1
        confusion += batch_confusion
    seconds = time.perf_counter() - t0
    run.epoch += 1
    trained = SegMetrics("train", run.data.classes, confusion, steps * cfg.batch_size)
    val = evaluate_masks(run.model, run.data.val, run.data.classes, run.data.mean, run.data.std, "val",
                         device=run.device, precision=cfg.precision)
    row = {"epoch": run.epoch, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
           "train_loss": loss_sum / max(steps, 1), "train_miou": trained.miou, "train_pixel_acc": trained.pixel_acc,
           "val_loss": val.loss, "val_miou": val.miou, "val_pixel_acc": val.pixel_acc,
           "images_per_s": steps * cfg.batch_size / seconds, "seconds": time.perf_counter() - run.start_time}
    run.history.append(row)
    if val.miou > run.best_miou:
        run.best_miou, run.best_epoch = val.miou, run.epoch
        save_checkpoint(run.out / "best.pt", {**run.meta, "model": run.model.state_dict(), "epoch": run.epoch,
                                              "val_miou": val.miou})
    save_checkpoint(run.out / "last.pt", run.state())
    if cfg.progress:
        print(f"epoch {run.epoch}: train loss {row['train_loss']:.4f} mIoU {trained.miou:.2f}% | val loss "
              f"{val.loss:.4f} mIoU {val.miou:.2f}% pixel acc {val.pixel_acc:.2f}%"
              f"{' (best)' if run.best_epoch == run.epoch else ''}", file=sys.stderr)
    return row


def train_segmentation(cfg: TrainConfig, resume: str | Path | None = None) -> SegResult:
    """Train ``cfg.model`` (a segmentation network) on the image/mask pairs of ``cfg.data``; checkpoints,
    metrics, curves and a report go to ``cfg.out_dir()``; ``resume`` continues a ``last.pt``."""
    run = _setup(cfg, resume)
    runlog = RunLog(run.out, run.cfg.tensorboard, run.history)
    try:
        while run.step < run.total_steps:
            runlog.append(train_epoch(run))
    finally:
        runlog.close()
    return _report(run)


def _report(run: SegRun) -> SegResult:
    from ..plots import plot_curves

    cfg, data = run.cfg, run.data
    best = load_training_checkpoint(run.out / "best.pt")
    model = create_model(cfg.model, num_classes=data.num_classes, **cfg.model_args)
    load_state_dict_into(model, best["model"], adapt=False)
    model.to(run.device)
    kwargs = dict(device=run.device, precision="fp32")
    val = evaluate_masks(model, data.val, data.classes, data.mean, data.std, "val", **kwargs)
    test = evaluate_masks(model, data.test, data.classes, data.mean, data.std, "test", **kwargs) \
        if cfg.eval_test and data.test is not None else None
    plot_curves(run.history, run.out / "curves.png", f"{cfg.model} on {data.name}", metric=("miou", "mIoU (%)"))
    seconds = time.perf_counter() - run.start_time
    summary = {"task": "segment", "model": cfg.model, "data": data.name, "splits": data.splits,
               "best_epoch": run.best_epoch, "val": val.summary(), "test": test.summary() if test else None,
               "seconds": round(seconds, 1), "config": cfg.to_dict(),
               "note": "best checkpoint chosen by validation mIoU; the test split was used once, at the end"}
    atomic_write(run.out / "report.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    log.info("best epoch %d: val mIoU %.2f%%; outputs in %s", run.best_epoch, val.miou, run.out)
    return SegResult(run.out, run.best_epoch, run.best_miou, val, test, run.history, seconds)
