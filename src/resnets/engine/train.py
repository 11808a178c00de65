"""The training loop, top to bottom: data, model, optimiser, then epochs of augment-forward-backward-step,
validation, checkpoints; at the end the best checkpoint is evaluated once on the test split."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import AugmentConfig, BatchAugment, BatchLoader, ImageData, ImageSet, batch_generator, load_data, take
from ..data.sources import images_of
from ..data.stream import StreamLoader, StreamSet, default_workers
from ..data.transforms import SampleTransform
from ..deploy.inference import native_bf16
from ..errors import CheckpointError, ResnetsError
from ..models import create_model
from ..models.loading import load_state_dict_into
from .checkpoint import load_training_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import Dist, convert_sync_batchnorm, init_distributed
from .ema import Lookahead, ModelEma
from .metrics import Metrics, classification_metrics
from .optim import frozen_stages_at, lr_factor, make_optimizer, set_lr
from .runlog import RunLog

log = logging.getLogger("resnets")


class TrainingDiverged(ResnetsError):
    pass


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_acc: float
    val: Metrics | None  # None without a validation split
    test: Metrics | None
    history: list[dict[str, Any]]
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ResnetsError("CUDA was asked for but is not available")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def augment_config(cfg: TrainConfig, streamed: bool = False) -> AugmentConfig:
    """The augmentation of batches. Streamed with random-resized crops, the workers crop and flip each image
    (``stream_transform``), and batches are only jittered, mixed and normalised."""
    if streamed and cfg.rrc_scale:
        return AugmentConfig(crop_padding=0, hflip=False, jitter=cfg.jitter, mixup=cfg.mixup, cutmix=cfg.cutmix)
    return AugmentConfig(crop_padding=cfg.crop_padding, pad_mode=cfg.pad_mode,
                         hflip=cfg.hflip and not cfg.alternate_flips,  # alternate flips: done by the loader
                         rrc_scale=tuple(cfg.rrc_scale) if cfg.rrc_scale else None, crop_size=cfg.crop_size,
                         jitter=cfg.jitter, mixup=cfg.mixup, cutmix=cfg.cutmix)


def stream_transform(cfg: TrainConfig, data: StreamSet) -> SampleTransform:
    """What the workers do to each streamed training image: random-resized crops and flips where the recipe
    asks for them, else the stored form (the batch augmentation then crops and flips)."""
    if cfg.rrc_scale:
        return SampleTransform(data.image_size, cfg.crop_size or data.image_size, scale=tuple(cfg.rrc_scale),
                               flip=cfg.hflip, seed=cfg.seed)
    return SampleTransform(data.image_size)


def make_loader(cfg: TrainConfig, data: ImageData, device: torch.device, dist: Dist) -> BatchLoader | StreamLoader:
    """The training batches: slices of the images in memory (global batches), or streamed (this process's)."""
    if not data.streamed:
        return BatchLoader(data.train, cfg.batch_size, shuffle=True, drop_last=len(data.train) > cfg.batch_size,
                           seed=cfg.seed, device=device, alternate_flips=cfg.hflip and cfg.alternate_flips)
    local, n = cfg.batch_size // dist.world, len(data.train)
    loader = StreamLoader(data.train, stream_transform(cfg, data.train), local, shuffle=True,
                          drop_last=n // dist.world > local, seed=cfg.seed, rank=dist.rank, world=dist.world,
                          workers=workers(cfg), device=device, strict=cfg.strict)
    log.info("process %d of %d: %d batches of %d of the %d training images per epoch, streamed with %d worker(s)",
             dist.rank, dist.world, len(loader), local, n, workers(cfg))
    return loader


def workers(cfg: TrainConfig) -> int:
    """The data-loading workers of each process: as configured, else the cores less one, shared on this machine."""
    return cfg.workers if cfg.workers is not None else default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def tta_views(x: torch.Tensor, flip: bool, translate: bool) -> list[tuple[torch.Tensor, float]]:
    """Test-time views of a batch with their weights: the images, with ``translate`` also shifted by one pixel
    up-left and down-right (reflected borders; half the weight), and with ``flip`` each view mirrored too."""
    views = [(x, 1.0)]
    if translate:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [(x, 0.5), (padded[..., :-2, :-2], 0.25), (padded[..., 2:, 2:], 0.25)]
    if flip:
        views = [(v.flip(3), w / 2) for v, w in views] + [(v, w / 2) for v, w in views]
    return views


@torch.no_grad()
def predict_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   aug: BatchAugment, *, batch_size: int = 256, device: torch.device | str = "cpu",
                   precision: str = "fp32", tta_flip: bool = False, tta_translate: bool = False,
                   channels_last: bool = False, dist: Dist | None = None) -> torch.Tensor:
    """Logits for uint8 images, batch by batch (averaged over the ``tta_views`` of each batch).

    ``model`` is a module (run in eval mode, under ``precision`` autocast) or any function from
    normalised images to logits, such as a ``deploy.prepare_inference`` runner. With ``dist``, each
    process computes its share of the images and every process gets all the logits.
    """
    if dist is not None and dist.world > 1:
        local = predict_logits(model, dist.share(images), aug, batch_size=batch_size, device=device,
                               precision=precision, tta_flip=tta_flip, tta_translate=tta_translate,
                               channels_last=channels_last)
        return dist.gather_shares(local, len(images))
    device = torch.device(device)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = aug.eval(images[i:i + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            y = sum(w * model(v).float() for v, w in tta_views(x, tta_flip, tta_translate))
        out.append(y.cpu())
    if was_training:
        model.train()
    return torch.cat(out) if out else torch.zeros(0, 0)


def stream_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: StreamSet, aug: BatchAugment, *,
                  workers: int = 0, dist: Dist | None = None, batch_size: int = 256,
                  **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a streamed split; with ``dist``, each process reads its part and all get all."""
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    loader = StreamLoader(data, data.eval_transform(), batch_size, shuffle=False, rank=rank, world=world,
                          workers=workers)
    logits, labels = [], []
    try:
        for x, y in loader.batches():
            logits.append(predict_logits(model, x, aug, batch_size=batch_size, **kwargs))
            labels.append(y)
    finally:
        loader.close()
    logits_t = torch.cat(logits) if logits else torch.zeros(0, 0)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if dist is not None and dist.world > 1:
        return dist.concat(logits_t), dist.concat(labels_t)
    return logits_t, labels_t


def evaluate_split(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: ImageSet | StreamSet,
                   classes: list[str], aug: BatchAugment, split: str, *, workers: int = 0, **kwargs: Any) -> Metrics:
    if isinstance(data, StreamSet):
        return classification_metrics(*stream_logits(model, data, aug, workers=workers, **kwargs), classes, split)
    return classification_metrics(predict_logits(model, data.images, aug, **kwargs), data.labels, classes, split)


def _prepare_data(cfg: TrainConfig) -> ImageData:
    data = load_data(cfg.data, root=cfg.data_root, download=cfg.download, image_size=cfg.image_size,
                     val_size=cfg.val_size, strict=cfg.strict, stream=cfg.stream, crop_size=cfg.crop_size)
    if data.skipped:
        log.warning("%d unreadable image(s) skipped (listed in report.json)", len(data.skipped))
    if cfg.subset is not None and cfg.subset < len(data.train):
        data.train = take(data.train, cfg.subset)
        data.splits["train"] += f", {cfg.subset} of them used (class-balanced, seed 0)"
    if cfg.crop_size is not None and cfg.crop_size > data.image_size:
        raise ResnetsError(f"crop size {cfg.crop_size} is larger than the stored images ({data.image_size})")
    if data.streamed and cfg.alternate_flips:
        raise ResnetsError("alternate flips need the data in memory: leave out --alternate-flips or add --in-memory")
    return data


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def train(cfg: TrainConfig, resume: str | Path | None = None,
          on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; checkpoints, metrics, curves and a report go to ``cfg.out_dir()``.

    ``resume`` continues from a ``last.pt`` checkpoint exactly where it stopped (its config is used).
    ``on_epoch_end`` is called with each epoch's metrics row, after that epoch's checkpoints are written.
    """
    ckpt = None
    if resume is not None:
        ckpt = load_training_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{resume} has no optimizer state: resume from a run's last.pt")
        cfg = TrainConfig(**ckpt["config"])
    cfg.validate()
    start_time = time.perf_counter()
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if dist.world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        if cfg.batch_size % dist.world:
            raise ResnetsError(f"batch size {cfg.batch_size} (the global batch) must divide among {dist.world} "
                               f"processes")
        if cfg.unfreeze_every is not None:
            raise ResnetsError("gradual unfreezing is not supported with distributed training")
    if cfg.precision == "auto":
        cfg = dataclasses.replace(cfg, precision="bf16" if native_bf16(device) else "fp32")
    _seed_everything(cfg.seed, cfg.deterministic)
    data = _prepare_data(cfg)

    aug = BatchAugment(augment_config(cfg, data.streamed), data.mean, data.std, data.num_classes)
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                         pretrained=cfg.pretrained, **cfg.model_args)
    if cfg.sync_bn and dist.world > 1:
        model = convert_sync_batchnorm(model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.freeze_stages is not None:
        model.freeze(cfg.freeze_stages)
    if hasattr(model, "init_from_data") and cfg.pretrained is None and resume is None:
        sample = images_of(take(data.train, 5000), 5000)  # class-balanced: trees are stored class by class
        model.init_from_data(aug.eval(sample.to(device)))  # e.g. the whitening stem
    optimizer = make_optimizer(model, cfg)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
    lookahead = Lookahead(model, cfg.lookahead_every, cfg.lookahead_decay) if cfg.lookahead_every else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    loader = make_loader(cfg, data, device, dist)
    steps_per_epoch = len(loader)
    read_every = 1 if device.type == "cpu" else 25  # reading a GPU's numbers waits for its queue
    has_val = len(data.val) > 0
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    forward = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(forward) if cfg.compile else forward
    lr = cfg.lr * (cfg.batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch else 1.0)
    eval_kwargs = dict(batch_size=max(cfg.batch_size, 256), device=device, precision=cfg.precision,
                       channels_last=cfg.channels_last, dist=dist)
    if data.streamed:
        eval_kwargs["workers"] = workers(cfg)

    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": cfg.to_dict(), "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
            "in_chans": data.in_chans, "image_size": data.image_size, "crop_size": cfg.crop_size,
            "splits": data.splits, "format": "resnets-train-v1"}
    epoch, step, best_acc, best_epoch, history = 0, 0, -1.0, -1, []
    partial = None  # the running totals of an epoch that a mid-epoch checkpoint interrupted
    if ckpt is not None:
        load_state_dict_into(model, ckpt["model"], adapt=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        if lookahead is not None:
            lookahead.load_state_dict(ckpt["lookahead"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, step, best_acc, best_epoch = ckpt["epoch"], ckpt["step"], ckpt["best_val_acc"], ckpt["best_epoch"]
        history, partial = list(ckpt["history"]), ckpt.get("epoch_totals")
        log.info("resumed from %s at epoch %d (step %d)", resume, epoch + (partial is not None), step)
    runlog = RunLog(out, cfg.tensorboard, history) if dist.main else None
    per_process = getattr(loader, "per_process", False)  # streamed batches are already this process's

    def training_state(**extra: Any) -> dict[str, Any]:
        return {**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "lookahead": lookahead.state_dict() if lookahead is not None else None,
                "scaler": scaler.state_dict(), "rng": rng_state(), "step": step, "best_val_acc": best_acc,
                "best_epoch": best_epoch, "history": history, **extra}

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=None if cfg.progress and dist.main else True, unit="step",
               dynamic_ncols=True)
    try:
        while step < total_steps:
            if cfg.freeze_stages is not None and model.frozen_stages != frozen_stages_at(cfg, epoch):
                model.freeze(frozen_stages_at(cfg, epoch))
                log.info("epoch %d: %s", epoch + 1, "all stages trainable" if model.frozen_stages is None
                         else f"stem and {model.frozen_stages} stage(s) frozen")
            model.train()
            bar.set_description(f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}")
            # loss sum, correct count, first non-finite step: kept on the device and read every
            # `read_every` steps, so that a GPU's queue is not drained at every step
            totals, seen = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64, device=device), 0
            if partial is not None:
                totals, seen = torch.tensor(partial[:3], dtype=torch.float64, device=device), int(partial[3])
                partial = None
            start = step - epoch * steps_per_epoch
            t0 = time.perf_counter()
            waited, t_ready = 0.0, t0  # time spent waiting for the data
            for i, (x, y) in enumerate(loader.batches(epoch, start), start=start):
                waited += time.perf_counter() - t_ready
                if step >= total_steps:
                    break
                set_lr(optimizer, lr * lr_factor(cfg, step / steps_per_epoch))
                x, target = aug.train(x, y, batch_generator(cfg.seed, epoch, i))
                if not per_process:
                    x, target, y = dist.share(x), dist.share(target), dist.share(y)  # this process's part
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, cfg.precision):
                    logits = forward(x)
                loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                if lookahead is not None:
                    lookahead.update(model, step + 1, total_steps)
                if ema is not None:
                    ema.update(model)
                hard = target if target.dim() == 1 else target.argmax(1)
                bad = torch.where((totals[2] < 0) & ~torch.isfinite(loss), step, totals[2])
                totals += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == hard).sum().double(),
                                       bad - totals[2]])
                step += 1
                seen += len(y)
                bar.update(1)
                if step % read_every == 0:
                    loss_sum, correct, all_seen = _read_totals(totals, seen, dist, out, epoch)
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{loss_sum / all_seen:.3f}", acc=f"{100 * correct / all_seen:.1f}",
                                    img_s=f"{all_seen / elapsed:.0f}", data=f"{100 * waited / elapsed:.0f}%")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step % steps_per_epoch:
                    if dist.main:
                        save_checkpoint(out / "last.pt", training_state(
                            epoch=epoch, epoch_totals=totals.tolist() + [seen]))
                    dist.barrier()
                t_ready = time.perf_counter()
            train_time = time.perf_counter() - t0
            loss_sum, correct, seen = _read_totals(totals, seen, dist, out, epoch)
            epoch += 1

            eval_model = ema.module if ema is not None else model
            val = evaluate_split(eval_model, data.val, data.classes, aug, "val", **eval_kwargs) if has_val else None
            row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(seen, 1), "train_acc": 100 * correct / max(seen, 1),
                   "val_loss": val and val.loss, "val_acc": val and val.top1, "val_top5": val and val.top5,
                   "images_per_s": seen / train_time, "train_seconds": train_time,
                   "data_wait_share": waited / train_time, "seconds": time.perf_counter() - start_time}
            history.append(row)
            is_best = val is None or val.top1 > best_acc  # without validation, the last epoch is kept
            if is_best:
                best_acc, best_epoch = (val.top1 if val else best_acc), epoch
            if dist.main:
                if is_best:
                    save_checkpoint(out / "best.pt", {**meta, "model": eval_model.state_dict(), "epoch": epoch,
                                                      "val_acc": val and val.top1})
                save_checkpoint(out / "last.pt", training_state(epoch=epoch))
                runlog.append(row)
            dist.barrier()  # every process sees the new checkpoints before going on
            if dist.main:
                val_text = f" | val loss {val.loss:.4f} acc {val.top1:.2f}%{' (best)' if is_best else ''}" if val else ""
                bar.write(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%{val_text}")
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        bar.close()
        if isinstance(loader, StreamLoader):
            loader.close()
            data.skipped += loader.skipped
        if runlog is not None:
            runlog.close()

    return _finish(cfg, out, data, aug, eval_kwargs, history, best_epoch, best_acc, start_time)


def _read_totals(totals: torch.Tensor, seen: int, dist: Dist, out: Path, epoch: int) -> tuple[float, float, float]:
    """The epoch's loss sum, correct count and images so far, over all processes; stops the run (all its
    processes together) if a loss was not finite."""
    loss_sum, correct, bad, seen = dist.sum(totals.tolist() + [seen])
    if bad != -dist.world:  # some process saw a non-finite loss (-1 on each process otherwise)
        raise TrainingDiverged(
            f"loss became {loss_sum} at epoch {epoch + 1} "
            f"(first at step {int(max(totals[2].item(), 0))}); stopped (the last good checkpoint is "
            f"{out / 'last.pt'}); try a lower --lr or --clip-grad")
    return loss_sum, correct, seen


def _finish(cfg: TrainConfig, out: Path, data: ImageData, aug: BatchAugment, eval_kwargs: dict[str, Any],
            history: list[dict[str, Any]], best_epoch: int, best_acc: float, start_time: float) -> TrainResult:
    """Evaluate the best checkpoint (validation, and the test split once), write the report and curves."""
    from ..plots import plot_curves, plot_confusion

    best = load_training_checkpoint(out / "best.pt")
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, **cfg.model_args)
    load_state_dict_into(model, best["model"], adapt=False)
    model.to(eval_kwargs["device"])
    # the reported numbers are float32
    kwargs = dict(eval_kwargs, tta_flip=cfg.tta_flip, tta_translate=cfg.tta_translate, precision="fp32")
    val = evaluate_split(model, data.val, data.classes, aug, "val", **kwargs) if len(data.val) else None
    test = None
    if cfg.eval_test and data.test is not None:
        test = evaluate_split(model, data.test, data.classes, aug, "test", **kwargs)
    seconds = time.perf_counter() - start_time
    if not eval_kwargs["dist"].main:
        return TrainResult(out, best_epoch, best_acc, val, test, history, seconds)
    if test is not None:
        plot_confusion(test.confusion, data.classes, out / "confusion_test.png", f"{cfg.model}: test split")
    plot_curves(history, out / "curves.png", f"{cfg.model} on {data.name}")
    report = {
        "model": cfg.model, "data": data.name, "splits": data.splits, "best_epoch": best_epoch,
        "val": val and val.summary(), "test": test.summary() if test else None, "tta_flip": cfg.tta_flip,
        "tta_translate": cfg.tta_translate,
        "seconds": round(seconds, 1), "skipped_images": data.skipped, "config": cfg.to_dict(),
        "note": ("best checkpoint chosen by validation accuracy" if val else
                 "no validation split: the last epoch's weights, fixed hyper-parameters")
        + "; the test split was used once, at the end",
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    test_line = f", test top-1 {test.top1:.2f}% ({test.n} images)" if test else ""
    val_line = f"val top-1 {val.top1:.2f}% ({val.n} images)" if val else "no validation split"
    log.info("best epoch %d: %s%s; outputs in %s", best_epoch, val_line, test_line, out)
    return TrainResult(out, best_epoch, best_acc, val, test, history, seconds)
