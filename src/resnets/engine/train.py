"""The training loop, top to bottom: ``setup`` makes the data, model and optimiser; each epoch runs
``train_step`` over the batches (augment, forward, backward, step) and ``end_epoch`` validates and writes the
checkpoints; ``report`` evaluates the best checkpoint once on the test split."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data import BatchAugment, BatchLoader, ImageData, batch_generator, take
from ..data.sources import images_of
from ..data.stream import StreamLoader
from ..errors import CheckpointError, ConfigError, ResnetsError
from ..files import atomic_write
from ..machine import cpu_isa, native_bf16
from ..models import create_classifier, get_model_spec
from ..models.loading import load_state_dict_into
from ..models.resnet import StagedNet
from .batches import augment_config, make_loader, prepare_data, workers
from .checkpoint import load_training_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distill import Teacher, distillation_loss, load_teachers, soft_targets
from .distributed import Dist, convert_sync_batchnorm, init_distributed
from .ema import Lookahead, ModelEma
from .loss import classification_loss
from .metrics import Metrics
from .optim import frozen_stages_at, lr_factor, make_optimizer, set_lr
from .predict import autocast, evaluate_split, resolve_device
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


@dataclass
class Run:
    """A training run: its parts, made once by ``setup``, and its progress, which the loop advances and every
    ``last.pt`` records."""

    cfg: TrainConfig
    device: torch.device
    dist: Dist
    data: ImageData
    aug: BatchAugment
    model: StagedNet
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model as the steps call it (DDP, torch.compile)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    lookahead: Lookahead | None
    loader: BatchLoader | StreamLoader
    out: Path
    meta: dict[str, Any]  # what every checkpoint says about the data and the configuration
    start_time: float
    teachers: list[Teacher] = field(default_factory=list)  # knowledge distillation
    compiled: bool = False  # whether ``forward`` goes through torch.compile (set or chosen: ``compile_pays``)
    epoch: int = 0
    step: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: list[float] | None = None  # the running totals of an epoch that a mid-epoch checkpoint interrupted

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def total_steps(self) -> int:
        return max(1, round(self.cfg.epochs * self.steps_per_epoch))

    @property
    def lr(self) -> float:
        """The peak learning rate, linearly scaled with the batch size where the recipe asks for it."""
        cfg = self.cfg
        return cfg.lr * (cfg.batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch else 1.0)

    def eval_kwargs(self) -> dict[str, Any]:
        kwargs = dict(batch_size=max(self.cfg.batch_size, 256), device=self.device, precision=self.cfg.precision,
                      channels_last=self.cfg.channels_last, dist=self.dist)
        if self.data.streamed:
            kwargs["workers"] = workers(self.cfg)
        return kwargs

    def state(self, **extra: Any) -> dict[str, Any]:
        """A ``last.pt``: everything needed to go on exactly from here."""
        return {**self.meta, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "step": self.step,
                "best_val_acc": self.best_acc, "best_epoch": self.best_epoch, "history": self.history, **extra}


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _placement(cfg: TrainConfig) -> tuple[TrainConfig, torch.device, Dist]:
    """The device and the process group; "auto" precision resolved for that device."""
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
    if cfg.compile and cfg.precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        # inductor's AVX2 code for the fast networks' bfloat16 step gave NaN or wrong logits (torch 2.13)
        raise ConfigError("--compile with bf16 needs a CPU that computes bfloat16 natively (AVX512-BF16 or AMX): "
                          "compiled bfloat16 code gave wrong results on this CPU's instructions; train in fp32 "
                          "(the default here) or without --compile")
    return cfg, device, dist


def _model(cfg: TrainConfig, data: ImageData, aug: BatchAugment, device: torch.device, dist: Dist,
           fresh: bool) -> StagedNet:
    """The model on ``device``, its stages frozen as configured; ``fresh`` (neither pretrained nor resumed):
    initialised from the data where the architecture asks for it (e.g. a whitening stem)."""
    model = create_classifier(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                              pretrained=cfg.pretrained, **cfg.model_args)
    if cfg.sync_bn and dist.world > 1:
        convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    if cfg.freeze_stages is not None:
        model.freeze(cfg.freeze_stages)
    init_from_data = getattr(model, "init_from_data", None)  # e.g. a whitening stem's filters
    if init_from_data is not None and fresh:
        sample = images_of(take(data.train, 5000), 5000)  # class-balanced: trees are stored class by class
        init_from_data(aug.eval(sample.to(device)))
    return model


# Steps from which compiling the training step pays where ``compile_pays`` says it can: compiling costs 25-35 s
# once on 2 cores and saves 0.01 s (ResNet-20) to 0.05 s (ResNet-56) a batch-128 step on an AMX CPU.
COMPILE_PAYS_STEPS = 5000


def compile_pays(device: torch.device, total_steps: int) -> bool:
    """Whether compiling the training step pays (``--compile`` unset): on a CPU with AMX, where inductor's
    fused batch-norm, ReLU and residual kernels made the CIFAR ResNets' bfloat16 step 1.13x (ResNet-20) to
    1.24x (ResNet-56) the eager channels_last one (bench/train_step.py), for runs of ``COMPILE_PAYS_STEPS`` or
    more. Not on AVX-512 without AMX nor in float32 on AVX2, where it was 0.96-1.04x; not on CUDA, unmeasured."""
    return device.type == "cpu" and cpu_isa() == "avx512_core_amx" and total_steps >= COMPILE_PAYS_STEPS


def _wrapped(model: nn.Module, cfg: TrainConfig, device: torch.device, dist: Dist, total_steps: int
             ) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """The model as the steps call it (DDP-wrapped, compiled where configured or where it pays), and whether it
    is compiled."""
    forward = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    compiled = cfg.compile if cfg.compile is not None else compile_pays(device, total_steps)
    if compiled and cfg.compile is None:
        log.info("compiling the training step (about half a minute; it pays on this CPU over %d steps)",
                 total_steps)
    return (torch.compile(forward) if compiled else forward), compiled


def setup(cfg: TrainConfig, resume: str | Path | None = None, machine: dict[str, Any] | None = None) -> Run:
    """Everything a run needs, in a fixed order (the random numbers depend on it); with ``resume``, the
    configuration, weights, optimiser, random state and progress of that ``last.pt``, with ``machine``'s
    settings in place of the checkpoint's (those of the machine that resumes: device, precision, out ...)."""
    ckpt = None
    if resume is not None:
        ckpt = load_training_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{resume} has no optimizer state: resume from a run's last.pt")
        # "auto" precision is decided again on the machine that resumes (bf16 where it is native, else float32)
        cfg = TrainConfig(**{**ckpt["config"], "precision": ckpt.get("precision_requested",
                                                                     ckpt["config"]["precision"]), **(machine or {})})
    requested = cfg.precision
    cfg.validate()
    if cfg.task != "classify":
        raise ConfigError("task 'segment' trains with resnets.engine.segmentation.train_segmentation")
    if get_model_spec(cfg.model).family == "segmentation":  # before any data is read
        raise ConfigError(f"{cfg.model} is a segmentation network: train it on images with masks, with "
                          f"--task segment")
    start_time = time.perf_counter()
    cfg, device, dist = _placement(cfg)
    _seed_everything(cfg.seed, cfg.deterministic)
    data = prepare_data(cfg)
    aug = BatchAugment(augment_config(cfg, data.streamed), data.mean, data.std, data.num_classes)
    model = _model(cfg, data, aug, device, dist, fresh=cfg.pretrained is None and resume is None)
    optimizer = make_optimizer(model, cfg)
    run = Run(cfg, device, dist, data, aug, model, model, optimizer,
              scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda"),
              ema=ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None,
              lookahead=Lookahead(model, cfg.lookahead_every, cfg.lookahead_decay) if cfg.lookahead_every else None,
              loader=make_loader(cfg, data, device, dist), out=cfg.out_dir(), start_time=start_time,
              meta={"config": cfg.to_dict(), "classes": data.classes, "mean": list(data.mean),
                    "std": list(data.std), "in_chans": data.in_chans, "image_size": data.image_size,
                    "crop_size": cfg.crop_size, "test_size": cfg.test_size, "test_crop_pct": cfg.test_crop_pct,
                    "splits": data.splits, "format": "resnets-train-v1",
                    "precision_requested": requested},
              teachers=load_teachers(cfg.teachers, data, device))
    run.forward, run.compiled = _wrapped(model, cfg, device, dist, run.total_steps)
    run.out.mkdir(parents=True, exist_ok=True)
    if cfg.save_init and ckpt is None:
        save_checkpoint(run.out / "init.pt", {**run.meta, "model": model.state_dict(), "epoch": 0})
    if ckpt is not None:
        _restore(run, ckpt)
        log.info("resumed from %s at epoch %d (step %d)", resume, run.epoch + (run.partial is not None), run.step)
    return run


def _restore(run: Run, ckpt: dict[str, Any]) -> None:
    load_state_dict_into(run.model, ckpt["model"], adapt=False)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.ema is not None:
        run.ema.load_state_dict(ckpt["ema"])
    if run.lookahead is not None:
        run.lookahead.load_state_dict(ckpt["lookahead"])
    run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    run.epoch, run.step, run.best_acc, run.best_epoch = ckpt["epoch"], ckpt["step"], ckpt["best_val_acc"], \
        ckpt["best_epoch"]
    run.history, run.partial = list(ckpt["history"]), ckpt.get("epoch_totals")


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, i: int, per_process: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on batch ``i`` of the epoch: augment, forward, backward, step (then lookahead and
    EMA). Returns the loss, the logits, the (possibly mixed) targets and this process's labels."""
    cfg = run.cfg
    epoch = run.step / run.steps_per_epoch
    set_lr(run.optimizer, run.lr, lr_factor(cfg, epoch), epoch)
    x, target = run.aug.train(x, y, batch_generator(cfg.seed, run.epoch, i))
    if not per_process:
        x, target, y = run.dist.share(x), run.dist.share(target), run.dist.share(y)  # this process's part
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, cfg.precision):
        logits = run.forward(x)
    if run.teachers:
        loss = distillation_loss(logits.float(), soft_targets(run.teachers, x, cfg.distill_temperature), target,
                                 temperature=cfg.distill_temperature, alpha=cfg.distill_alpha,
                                 label_smoothing=cfg.label_smoothing)
    else:
        loss = classification_loss(cfg.loss, logits.float(), target, smoothing=cfg.label_smoothing,
                                   target_thresh=cfg.bce_target_thresh)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.lookahead is not None:
        run.lookahead.update(run.model, run.step + 1, run.total_steps)
    if run.ema is not None:
        run.ema.update(run.model)
    return loss, logits, target, y


@dataclass
class EpochTotals:
    loss_sum: float
    correct: float
    seen: float
    seconds: float  # training time of the epoch (this process's part since a resume)
    waited: float  # of which waiting for the data


def _begin_epoch(run: Run, bar: Any) -> tuple[torch.Tensor, int]:
    """Unfreeze what the schedule says, and the epoch's running totals: loss sum, correct count and first
    non-finite step (on the device, read only every few steps), and images seen."""
    cfg, model = run.cfg, run.model
    if cfg.freeze_stages is not None and model.frozen_stages != frozen_stages_at(cfg, run.epoch):
        model.freeze(frozen_stages_at(cfg, run.epoch))
        log.info("epoch %d: %s", run.epoch + 1, "all stages trainable" if model.frozen_stages is None
                 else f"stem and {model.frozen_stages} stage(s) frozen")
    model.train()
    bar.set_description(f"epoch {run.epoch + 1}/{math.ceil(run.total_steps / run.steps_per_epoch)}")
    if run.partial is not None:
        totals, seen = torch.tensor(run.partial[:3], dtype=torch.float64, device=run.device), int(run.partial[3])
        run.partial = None
        return totals, seen
    return torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64, device=run.device), 0


Control = Callable[[Run], str | None]  # after each step: None, "save" (a mid-epoch last.pt) or "stop" (save, end)


def train_epoch(run: Run, bar: Any, control: Control | None = None) -> EpochTotals | None:
    """The rest of the current epoch: its steps, the progress bar, and mid-epoch checkpoints where configured
    or where ``control`` asks for one. None where ``control`` stopped the epoch (its ``last.pt`` is written)."""
    cfg, dist = run.cfg, run.dist
    read_every = 1 if run.device.type == "cpu" else 25  # reading a GPU's numbers waits for its queue
    per_process = getattr(run.loader, "per_process", False)  # streamed batches are already this process's
    totals, seen = _begin_epoch(run, bar)
    start = run.step - run.epoch * run.steps_per_epoch
    t0 = time.perf_counter()
    waited, t_ready = 0.0, t0  # time spent waiting for the data
    for i, (x, y) in enumerate(run.loader.batches(run.epoch, start), start=start):
        waited += time.perf_counter() - t_ready
        if run.step >= run.total_steps:
            break
        loss, logits, target, y = train_step(run, x, y, i, per_process)
        hard = target if target.dim() == 1 else target.argmax(1)
        bad = torch.where((totals[2] < 0) & ~torch.isfinite(loss), run.step, totals[2])
        totals += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == hard).sum().double(),
                               bad - totals[2]])
        run.step += 1
        seen += len(y)
        bar.update(1)
        if run.step % read_every == 0:
            loss_sum, correct, all_seen = _read_totals(totals, seen, dist, run.out, run.epoch)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / all_seen:.3f}", acc=f"{100 * correct / all_seen:.1f}",
                            img_s=f"{all_seen / elapsed:.0f}", data=f"{100 * waited / elapsed:.0f}%")
        asked = control(run) if control is not None else None
        every = cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0
        if (every or asked) and run.step % run.steps_per_epoch:  # an epoch's end writes its own
            if dist.main:
                save_checkpoint(run.out / "last.pt", run.state(epoch=run.epoch, epoch_totals=totals.tolist() + [seen]))
            dist.barrier()
        if asked == "stop" and run.step % run.steps_per_epoch:
            return None
        t_ready = time.perf_counter()
    seconds = time.perf_counter() - t0
    return EpochTotals(*_read_totals(totals, seen, dist, run.out, run.epoch), seconds, waited)


def end_epoch(run: Run, totals: EpochTotals, bar: Any, runlog: RunLog | None) -> dict[str, Any]:
    """Close the epoch: validate (the EMA weights where kept), record its metrics row, write ``best.pt`` when
    validation improved and ``last.pt`` always. Returns the row."""
    run.epoch += 1
    eval_model = run.ema.module if run.ema is not None else run.model
    val = evaluate_split(eval_model, run.data.val, run.data.classes, run.aug, "val",
                         **run.eval_kwargs()) if len(run.data.val) else None
    seen = max(totals.seen, 1)
    row = {"epoch": run.epoch, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
           "train_loss": totals.loss_sum / seen, "train_acc": 100 * totals.correct / seen,
           "val_loss": val and val.loss, "val_acc": val and val.top1, "val_top5": val and val.top5,
           "images_per_s": totals.seen / totals.seconds, "train_seconds": totals.seconds,
           "data_wait_share": totals.waited / totals.seconds, "seconds": time.perf_counter() - run.start_time}
    run.history.append(row)
    is_best = val is None or val.top1 > run.best_acc  # without validation, the last epoch is kept
    if is_best:
        run.best_acc, run.best_epoch = (val.top1 if val else run.best_acc), run.epoch
    if run.dist.main:
        if is_best:
            save_checkpoint(run.out / "best.pt", {**run.meta, "model": eval_model.state_dict(), "epoch": run.epoch,
                                                  "val_acc": val and val.top1})
        save_checkpoint(run.out / "last.pt", run.state(epoch=run.epoch))
        if runlog is not None:
            runlog.append(row)
    run.dist.barrier()  # every process sees the new checkpoints before going on
    if run.dist.main:
        val_text = f" | val loss {val.loss:.4f} acc {val.top1:.2f}%{' (best)' if is_best else ''}" if val else ""
        bar.write(f"epoch {run.epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%{val_text}",
                  file=sys.stderr)  # beside the bar and the log: standard output stays for results (--json)
    return row


def train(cfg: TrainConfig, resume: str | Path | None = None,
          on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; checkpoints, metrics, curves and a report go to ``cfg.out_dir()``.

    ``resume`` continues from a ``last.pt`` checkpoint exactly where it stopped (its config is used).
    ``on_epoch_end`` is called with each epoch's metrics row, after that epoch's checkpoints are written.
    Segmentation (``task="segment"``) is ``segmentation.train_segmentation``.
    """
    from tqdm import tqdm

    run = setup(cfg, resume)
    runlog = RunLog(run.out, run.cfg.tensorboard, run.history) if run.dist.main else None
    bar = tqdm(total=run.total_steps, initial=run.step, unit="step", dynamic_ncols=True,
               disable=None if run.cfg.progress and run.dist.main else True)
    try:
        while run.step < run.total_steps:
            totals = train_epoch(run, bar)
            assert totals is not None  # only a control stops an epoch early
            row = end_epoch(run, totals, bar, runlog)
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        bar.close()
        if isinstance(run.loader, StreamLoader):
            run.loader.close()
            run.data.skipped += run.loader.skipped
        if runlog is not None:
            runlog.close()
    return report(run)


def _read_totals(totals: torch.Tensor, seen: int, dist: Dist, out: Path, epoch: int) -> tuple[float, float, float]:
    """The epoch's loss sum, correct count and images so far, over all processes; stops the run (all its
    processes together) if a loss was not finite."""
    loss_sum, correct, bad, all_seen = dist.sum(totals.tolist() + [seen])
    if bad != -dist.world:  # some process saw a non-finite loss (-1 on each process otherwise)
        raise TrainingDiverged(
            f"loss became {loss_sum} at epoch {epoch + 1} "
            f"(first at step {int(max(totals[2].item(), 0))}); stopped (the last good checkpoint is "
            f"{out / 'last.pt'}); try a lower --lr or --clip-grad")
    return loss_sum, correct, all_seen


def report(run: Run) -> TrainResult:
    """Evaluate the best checkpoint (validation, and the test split once), write the report and curves."""
    from ..plots import plot_curves, plot_confusion

    cfg, out, data, aug, eval_kwargs = run.cfg, run.out, run.data, run.aug, run.eval_kwargs()
    history, best_epoch, best_acc, start_time = run.history, run.best_epoch, run.best_acc, run.start_time

    best = load_training_checkpoint(out / "best.pt")
    model = create_classifier(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, **cfg.model_args)
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
    summary = {
        "model": cfg.model, "data": data.name, "splits": data.splits, "best_epoch": best_epoch,
        "val": val and val.summary(), "test": test.summary() if test else None, "tta_flip": cfg.tta_flip,
        "tta_translate": cfg.tta_translate,
        "seconds": round(seconds, 1), "skipped_images": data.skipped, "config": cfg.to_dict(),
        "note": ("best checkpoint chosen by validation accuracy" if val else
                 "no validation split: the last epoch's weights, fixed hyper-parameters")
        + "; the test split was used once, at the end",
    }
    atomic_write(out / "report.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    test_line = f", test top-1 {test.top1:.2f}% ({test.n} images)" if test else ""
    val_line = f"val top-1 {val.top1:.2f}% ({val.n} images)" if val else "no validation split"
    log.info("best epoch %d: %s%s; outputs in %s", best_epoch, val_line, test_line, out)
    return TrainResult(out, best_epoch, best_acc, val, test, history, seconds)
