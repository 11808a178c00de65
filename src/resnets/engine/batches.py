"""A training run's data: loaded and checked against the configuration, then turned into batches of
augmented images, sliced from memory or streamed from disk by worker processes."""
from __future__ import annotations

import dataclasses
import logging
import os

import torch

from ..data import AugmentConfig, BatchLoader, ImageData, load_data, take
from ..data.augment import test_resize
from ..data.loader import epoch_images
from ..data.stream import StreamLoader, StreamSet, default_workers
from ..data.transforms import SampleTransform
from ..data.types import ImageSet, channel_stats, fold_indices
from ..errors import ResnetsError
from .config import TrainConfig
from .distributed import Dist

log = logging.getLogger("resnets")


def augment_config(cfg: TrainConfig, streamed: bool = False) -> AugmentConfig:
    """The augmentation of batches. Streamed with random-resized crops, the workers crop and flip each image
    (``stream_transform``), and batches are only jittered, mixed and normalised."""
    if streamed and cfg.rrc_scale:
        return AugmentConfig(crop_padding=0, hflip=False, jitter=cfg.jitter, mixup=cfg.mixup, cutmix=cfg.cutmix,
                             randaugment=cfg.randaugment)
    return AugmentConfig(crop_padding=cfg.crop_padding, pad_mode=cfg.pad_mode,
                         hflip=cfg.hflip and not cfg.alternate_flips,  # alternate flips: done by the loader
                         rrc_scale=_pair(cfg.rrc_scale), crop_size=cfg.crop_size,
                         jitter=cfg.jitter, mixup=cfg.mixup, cutmix=cfg.cutmix, randaugment=cfg.randaugment,
                         test_size=cfg.test_size, test_crop_pct=cfg.test_crop_pct)


def _pair(scale: list[float] | None) -> tuple[float, float] | None:
    """A validated ``rrc_scale`` (two numbers) as the tuple the transforms take."""
    return (scale[0], scale[1]) if scale else None


def stream_transform(cfg: TrainConfig, data: StreamSet) -> SampleTransform:
    """What the workers do to each streamed training image: random-resized crops and flips where the recipe
    asks for them, else the stored form (the batch augmentation then crops and flips)."""
    if cfg.rrc_scale:
        return SampleTransform(data.image_size, cfg.crop_size or data.image_size, scale=_pair(cfg.rrc_scale),
                               flip=cfg.hflip, seed=cfg.seed)
    return SampleTransform(data.image_size)


def make_loader(cfg: TrainConfig, data: ImageData, device: torch.device, dist: Dist) -> BatchLoader | StreamLoader:
    """The training batches: slices of the images in memory (global batches), or streamed (this process's)."""
    if isinstance(data.train, ImageSet):
        return BatchLoader(data.train, cfg.batch_size, shuffle=True, drop_last=len(data.train) > cfg.batch_size,
                           seed=cfg.seed, device=device, alternate_flips=cfg.hflip and cfg.alternate_flips,
                           repeats=cfg.aug_repeats)
    train = data.train
    local, n = cfg.batch_size // dist.world, epoch_images(len(train), cfg.aug_repeats)
    loader = StreamLoader(train, stream_transform(cfg, train), local, shuffle=True,
                          drop_last=n // dist.world > local, seed=cfg.seed, rank=dist.rank, world=dist.world,
                          workers=workers(cfg), device=device, strict=cfg.strict, repeats=cfg.aug_repeats)
    log.info("process %d of %d: %d batches of %d of the %d training images per epoch, streamed with %d worker(s)",
             dist.rank, dist.world, len(loader), local, n, workers(cfg))
    return loader


def workers(cfg: TrainConfig) -> int:
    """The data-loading workers of each process: as configured, else the cores less one, shared on this machine."""
    return cfg.workers if cfg.workers is not None else default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _hold_out_fold(data: ImageData, folds: int, fold: int) -> None:
    """K-fold cross-validation: fold ``fold`` of the training images becomes the validation split; the input
    statistics are those of the images trained on."""
    train = data.train
    if not isinstance(train, ImageSet):
        raise ResnetsError("K-fold cross-validation needs the data in memory: add --in-memory")
    try:
        rest, held = fold_indices(train.labels, folds, fold)
    except ValueError as e:
        raise ResnetsError(str(e)) from None
    data.train, data.val = train.subset(rest), train.subset(held)
    data.mean, data.std = channel_stats(data.train.images)
    data.splits["val"] = f"fold {fold} of {folds} of the training images (class-balanced, seed 0)"
    data.splits["train"] += f", less fold {fold} of {folds}"


def prepare_data(cfg: TrainConfig) -> ImageData:
    """The configured data set, with its training subset taken, checked against the augmentation."""
    data = load_data(cfg.data, root=cfg.data_root, download=cfg.download, image_size=cfg.image_size,
                     val_size=0 if cfg.folds else cfg.val_size, strict=cfg.strict, stream=cfg.stream,
                     crop_size=cfg.crop_size)
    if data.skipped:
        log.warning("%d unreadable image(s) skipped (listed in report.json)", len(data.skipped))
    if cfg.subset is not None and cfg.subset < len(data.train):
        data.train = take(data.train, cfg.subset)
        data.splits["train"] += f", {cfg.subset} of them used (class-balanced, seed 0)"
    if cfg.folds:
        _hold_out_fold(data, cfg.folds, cfg.fold)
    if cfg.crop_size is not None and cfg.crop_size > data.image_size:
        raise ResnetsError(f"crop size {cfg.crop_size} is larger than the stored images ({data.image_size})")
    if data.streamed and cfg.test_size is not None:  # the workers decode evaluation images at the test size
        for split in ("val", "test"):
            s = getattr(data, split)
            if s is not None:
                side = test_resize(s.image_size, s.crop, cfg.test_size, cfg.test_crop_pct)
                setattr(data, split, dataclasses.replace(s, image_size=side, crop=cfg.test_size))
    if data.streamed and cfg.alternate_flips:
        raise ResnetsError("alternate flips need the data in memory: leave out --alternate-flips or add --in-memory")
    return data
