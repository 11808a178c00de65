"""Structured pruning: a trained network made genuinely smaller (fewer channels in dense layers, not masks),
then fine-tuned.

What is removed: the *inner* channels of each residual block (``conv1 → bn1 → conv2`` of a basic block, both
inner runs of a bottleneck; ``models.channels``). The channels of the residual stream are kept: every block of
a stage adds into the same stream, so removing one of its channels would couple all of them and the shortcuts;
inner channels touch nothing outside their block, and hold most of the MACs (all but the stem, the projections
and the classifier). Which channels go:

- ``l1``: the smallest L1 norms of the producing convolution's filters (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets");
- ``bn``: the smallest batch-norm scales ``|γ|`` (Liu et al. 2017, "Network Slimming").

``scope="layer"`` removes the same share of every run; ``"global"`` ranks all channels together (L1 norms
divided by their layer's mean, so that layers of different fan-in compare; γ as it is) and keeps at least one
channel per run. ``multiple`` rounds each run's kept count to a multiple of it (8 or 16: the vector widths
of CPU and GPU kernels; odd widths such as 11 or 45 run no faster than the next multiple up). The result's
architecture is the parent's with a ``channels`` model argument, so it loads,
fine-tunes, exports and serves as any other checkpoint.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engine.checkpoint import (load_training_checkpoint, model_from_checkpoint, save_checkpoint, save_weights,
                                training_recipe)
from .errors import ConfigError
from .models.channels import inner_channels, keep_channels, kept_width

log = logging.getLogger("resnets")
CRITERIA = ("l1", "bn")
SCOPES = ("layer", "global")


def check_settings(amount: float | None = None, criterion: str | None = None, scope: str | None = None,
                   multiple: int | None = None) -> None:
    """Refuse a bad pruning setting (each one checked where given)."""
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1):
        raise ConfigError(f"the channel multiple must be a whole number >= 1 (8 or 16 suit most kernels), "
                          f"got {multiple}")
    if amount is not None and not 0 < amount < 1:
        raise ConfigError(f"the pruning amount must be a share between 0 and 1 (exclusive), got {amount}")
    if criterion is not None and criterion not in CRITERIA:
        raise ConfigError(f"pruning criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if scope is not None and scope not in SCOPES:
        raise ConfigError(f"pruning scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def channel_scores(model: nn.Module, criterion: str = "l1") -> dict[str, torch.Tensor]:
    """How much each inner channel matters, per run: its filter's L1 norm, or its batch-norm |γ|."""
    check_settings(criterion=criterion)
    runs = inner_channels(model)
    if not runs:
        raise ConfigError(f"{type(model).__name__} has no residual blocks whose channels the pruner knows "
                          "(basic, bottleneck and pre-activation blocks)")
    scores = {}
    for name, run in runs.items():
        conv, norm, _ = run.modules()
        if criterion == "l1":
            scores[name] = conv.weight.detach().abs().flatten(1).sum(1).float()
            continue
        gamma = getattr(norm, "weight", None)
        if gamma is None:
            raise ConfigError(f"{name}: its norm has no scale γ; use --criterion l1")
        scores[name] = gamma.detach().abs().float()
    return scores


def choose_channels(scores: dict[str, torch.Tensor], amount: float, scope: str = "layer",
                    normalise: bool = True, multiple: int = 1) -> dict[str, torch.Tensor]:
    """The channels to keep (sorted indices) per run: the best-scored ``1 - amount`` of each run (``layer``),
    or of all runs together (``global``, scores divided by their run's mean when ``normalise``); each count
    rounded to the nearest multiple of ``multiple`` (at least one multiple, at most the run's width)."""
    check_settings(amount, scope=scope, multiple=multiple)
    if scope == "layer":
        counts = {k: len(s) * (1 - amount) for k, s in scores.items()}
    else:
        scaled = {k: s / s.mean().clamp_min(1e-12) if normalise else s for k, s in scores.items()}
        everything = torch.cat(list(scaled.values()))
        removed = round(len(everything) * amount)
        threshold = everything.sort().values[removed - 1] if removed else -math.inf
        counts = {k: int((s > threshold).sum()) for k, s in scaled.items()}
    counts = {k: kept_width(n, len(scores[k]), multiple) for k, n in counts.items()}
    return {k: s.argsort(descending=True, stable=True)[:counts[k]].sort().values for k, s in scores.items()}


def prune(model: nn.Module, amount: float, criterion: str = "l1", scope: str = "layer", multiple: int = 1
          ) -> dict[str, int]:
    """Remove ``amount`` of ``model``'s inner channels in place (each run's count rounded to ``multiple``);
    returns the channels kept per run (the ``channels`` model argument of the smaller architecture)."""
    keep = choose_channels(channel_scores(model, criterion), amount, scope, normalise=criterion == "l1",
                           multiple=multiple)
    keep_channels(model, keep)
    return {k: len(v) for k, v in keep.items()}


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every batch norm's running statistics on ``images`` (normalised inputs; no labels, no
    gradients): removing channels shifts the statistics of the layers after them, and the parent's no longer
    fit (Li et al. 2020, "EagleEye", call this adaptive batch norm)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = model.training
    model.train()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def size_of(model: nn.Module, input_size: int) -> dict[str, int]:
    """Parameters and multiply-accumulates for one image of ``input_size``."""
    from .models.profile import profile_model

    return {"params": sum(p.numel() for p in model.parameters()),
            "macs": sum(r.macs for r in profile_model(model, input_size))}


def prune_checkpoint(checkpoint: str | Path, out: str | Path, amount: float, *, criterion: str = "l1",
                     scope: str = "layer", multiple: int = 1, finetune_epochs: float = 0, lr_factor: float = 0.1,
                     distill: bool = False, data: str | None = None, data_root: str | None = None,
                     calibration: int = 2048, progress: bool = True, recipe: str | None = None) -> dict[str, Any]:
    """Prune a trained checkpoint, re-estimate its batch-norm statistics on ``calibration`` training images,
    fine-tune it for ``finetune_epochs`` with its own recipe at ``lr_factor`` times its learning rate (with
    ``distill``, learning from the parent's outputs as well as the labels: the parent is the teacher), and
    write the smaller network to ``out`` (``.pt`` checkpoint, or ``.safetensors``
    weights; with fine-tuning, the network before it is kept as ``OUT-pruned.pt`` and the run in
    ``OUT-finetune/``; on ``data`` where given, and with ``recipe`` where the checkpoint carries none). Returns
    sizes and validation/test top-1 before pruning, after it and after fine-tuning."""
    from .engine.evaluate import calibration_images, load_checkpoint_and_data

    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".safetensors"):
        raise ConfigError(f"--out must name a .pt or .safetensors file, got {out}")
    if finetune_epochs < 0 or not 0 < lr_factor <= 1 or calibration < 1:
        raise ConfigError("--finetune-epochs must be >= 0, the learning-rate factor in (0, 1] and the calibration "
                          "images >= 1")
    if distill and not finetune_epochs:
        raise ConfigError("--distill teaches the pruned network during fine-tuning: give --finetune-epochs too")
    check_settings(amount, criterion, scope, multiple)  # before any work
    loaded = load_checkpoint_and_data(checkpoint, data, data_root)
    ckpt = loaded.checkpoint
    # the settings to fine-tune with, checked before any work
    recipe_cfg = training_recipe(ckpt, checkpoint, recipe, data=data, data_root=data_root) if finetune_epochs else \
        ckpt["config"]
    model, size = loaded.model, ckpt.get("crop_size") or ckpt["image_size"]
    report: dict[str, Any] = {"parent": str(checkpoint), "amount": amount, "criterion": criterion, "scope": scope,
                              "multiple": multiple,
                              "before": {**size_of(model, size), "top1": split_top1(model, loaded)}}
    channels = prune(model, amount, criterion, scope, multiple)
    report["pruned"] = {**size_of(model, size), "top1": split_top1(model, loaded)}
    recalibrate_batch_norm(model, calibration_images(loaded, calibration))
    report["recalibrated"] = {"images": calibration, "top1": split_top1(model, loaded)}
    config = {**recipe_cfg, "model_args": {**ckpt["config"].get("model_args", {}), "channels": channels}}
    description = {k: report[k] for k in ("parent", "amount", "criterion", "scope", "multiple")}
    teachers = [str(checkpoint)] if distill else None
    result = {**{k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "rng", "ema")},
              "config": config, "model": model.state_dict(), "pruned": description}
    out.parent.mkdir(parents=True, exist_ok=True)
    if finetune_epochs:
        start = out.with_name(out.stem + "-pruned.pt")
        save_checkpoint(start, result)
        best = finetune(start, config, finetune_epochs, lr_factor, out.with_name(out.stem + "-finetune"), progress,
                        teachers)
        result = {**load_training_checkpoint(best), "pruned": description}
        tuned, _ = model_from_checkpoint(best)
        report["finetuned"] = {"epochs": finetune_epochs, "distilled": distill, "top1": split_top1(tuned, loaded)}
    if out.suffix == ".safetensors":
        save_weights(out, result, {"pruned": description})
    else:
        save_checkpoint(out, result)
    report["file"], report["file_bytes"] = str(out), out.stat().st_size
    return report


def split_top1(model: nn.Module, loaded: Any) -> dict[str, float]:
    """Top-1 of ``model`` on the validation and test splits of ``loaded`` (a checkpoint's data), where present."""
    from .engine.predict import evaluate_split

    splits = [s for s in ("val", "test") if getattr(loaded.dataset, s) is not None and len(getattr(loaded.dataset, s))]
    return {s: round(evaluate_split(model.eval(), getattr(loaded.dataset, s), loaded.dataset.classes, loaded.aug,
                                    s).top1, 2) for s in splits}


def finetune(start: Path, config: dict[str, Any], epochs: float, lr_factor: float, folder: Path,
             progress: bool = True, teachers: list[str] | None = None) -> Path:
    """Train the network of checkpoint ``start`` on for ``epochs`` with the recipe ``config`` at ``lr_factor``
    times its learning rate, no warm-up, into ``folder`` (distilled from ``teachers`` where given, instead of
    the recipe's own); returns the best checkpoint's path. (The same call on the unpruned parent is the fair
    control for a pruned network's fine-tuning: equal extra training.)"""
    from .engine import TrainConfig, train

    settings = {**config, "pretrained": str(start), "epochs": epochs, "lr": config["lr"] * lr_factor,
                "warmup_epochs": 0, "out": str(folder), "progress": progress, "save_init": False}
    if teachers is not None:
        settings["teachers"] = teachers
    log.info("fine-tuning for %g epochs at learning rate %g", epochs, settings["lr"])
    train(TrainConfig(**settings))
    return folder / "best.pt"
