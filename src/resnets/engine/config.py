"""Training configuration: one flat dataclass, filled from defaults, then a recipe (YAML), then overrides."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError

Schedule = Literal["cosine", "linear", "step", "multistep", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """Everything a training run depends on. Epoch counts may be fractional; schedules step every iteration."""

    # what to train
    model: str = "resnet20"
    model_args: dict[str, Any] = field(default_factory=dict)  # extra ResNet arguments, e.g. drop_path_rate
    pretrained: str | None = None  # weights to start from (fine-tuning); a new class count gets a new head
    freeze_stages: int | None = None  # freeze the stem and this many stages (batch-norm statistics too)
    unfreeze_every: float | None = None  # gradual unfreezing: one more stage (deepest first) every N epochs
    head_lr_mult: float = 1.0  # learning-rate multiplier of the classifier
    # data
    data: str = "digits"  # digits | cifar10 | cifar100 | path to an image tree, .tar(.gz) or CIFAR batches
    data_root: str | None = None  # where the CIFAR batches are
    download: bool = False
    image_size: int | None = None  # stored image size for image trees
    val_size: float | None = None  # held-out part of train (fraction or count); None: the dataset's default; 0: none
    subset: int | None = None  # train on N training images only, class-balanced (quick runs)
    strict: bool = False  # fail on an unreadable image instead of skipping it
    stream: bool | None = None  # read image folders and shards from disk as training uses them; None: when the decoded set would take over a quarter of memory
    workers: int | None = None  # worker processes that decode streamed data; None: the cores less one per training process
    # optimisation
    epochs: float = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False  # exempt norm and bias parameters from weight decay
    norm_lr_mult: float = 1.0  # lr multiplier of batch-norm parameters; their weight decay is divided by it
    label_smoothing: float = 0.0
    schedule: Schedule = "cosine"
    final_lr_factor: float = 0.0  # "linear": the lr falls linearly from lr to lr * this at the end
    milestones: list[float] = field(default_factory=list)  # epochs, for "multistep"
    step_size: float = 30  # epochs, for "step"
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_constant: bool = False  # constant lr * warmup_factor during warm-up (the paper's ResNet-110), else linear
    warmup_factor: float = 0.1
    clip_grad: float | None = None  # max gradient norm
    ema_decay: float | None = None  # e.g. 0.999; the EMA weights are evaluated and saved when set
    lookahead_every: int = 0  # airbench's lookahead: every N steps the weights restart from their slow average; 0 = off
    lookahead_decay: float = 0.95**5  # the slow average's decay at the end (it rises as progress**3 from 0)
    lr_reference_batch: int | None = None  # linear scaling: lr * batch_size / this (batch_size is the global one)
    sync_bn: bool = False  # distributed: batch-norm statistics of the global batch
    # augmentation
    crop_padding: int = 4
    pad_mode: Literal["zeros", "reflect"] = "zeros"  # how random crops pad the image
    hflip: bool = True
    alternate_flips: bool = False  # with hflip: each image mirrored in every other epoch (a random half from the first)
    rrc_scale: list[float] | None = None
    crop_size: int | None = None
    jitter: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    # speed and reproducibility
    precision: Precision = "auto"  # autocast dtype; auto: bf16 where the CPU (AVX512-BF16/AMX) or GPU runs it natively
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    # outputs
    out: str = "runs/{model}-{data}"
    checkpoint_every: int = 0  # also write last.pt every N steps, to resume mid-epoch exactly; 0: at epoch ends only
    eval_test: bool = True  # evaluate the best checkpoint on the test split once, at the end
    tta_flip: bool = False
    tta_translate: bool = False  # also average over one-pixel shifts (up-left and down-right), airbench-style
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> "TrainConfig":
        checks = [
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs:g}"),
            (1 <= self.batch_size <= 65536, f"batch size must be in [1, 65536], got {self.batch_size}"),
            (0 < self.lr <= 10, f"learning rate must be in (0, 10], got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.weight_decay < 1, f"weight decay must be in [0, 1), got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"EMA decay must be in (0, 1), got {self.ema_decay}"),
            (self.lookahead_every >= 0, f"lookahead interval must be >= 0 steps, got {self.lookahead_every}"),
            (0 <= self.lookahead_decay < 1, f"lookahead decay must be in [0, 1), got {self.lookahead_decay}"),
            (self.clip_grad is None or self.clip_grad > 0, f"gradient clip must be > 0, got {self.clip_grad}"),
            (self.schedule in ("cosine", "linear", "step", "multistep", "constant"),
             f"unknown schedule {self.schedule!r}"),
            (0 <= self.final_lr_factor <= 1, f"final lr factor must be in [0, 1], got {self.final_lr_factor}"),
            (self.norm_lr_mult > 0, f"norm lr multiplier must be > 0, got {self.norm_lr_mult}"),
            (self.pad_mode in ("zeros", "reflect"), f"pad mode must be zeros or reflect, got {self.pad_mode!r}"),
            (self.val_size is None or self.val_size >= 0, f"validation size must be >= 0, got {self.val_size}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"),
             f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"),
            (self.subset is None or self.subset >= 1, f"subset must be >= 1, got {self.subset}"),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.checkpoint_every >= 0, f"checkpoint interval must be >= 0 steps, got {self.checkpoint_every}"),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
            (self.lr_reference_batch is None or self.lr_reference_batch >= 1,
             f"lr reference batch must be >= 1, got {self.lr_reference_batch}"),
            (self.head_lr_mult > 0, f"head learning-rate multiplier must be > 0, got {self.head_lr_mult}"),
            (self.unfreeze_every is None or self.unfreeze_every > 0,
             f"unfreeze interval must be > 0 epochs, got {self.unfreeze_every}"),
            (not self.out_dir().is_file(), f"output folder {self.out_dir()} is a file"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def out_dir(self) -> Path:
        data = Path(self.data).name.split(".")[0] if self.data else "data"
        return Path(self.out.format(model=self.model, data=data))


def _field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("resnets.recipes").iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe's settings: a shipped recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        if name_or_path not in list_recipes():
            close = difflib.get_close_matches(name_or_path, list_recipes(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_recipes())}"
            raise ConfigError(f"unknown recipe {name_or_path!r}{hint}")
        text = resources.files("resnets.recipes").joinpath(f"{name_or_path}.yaml").read_text()
    try:
        settings = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {name_or_path} is not valid YAML: {e}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"recipe {name_or_path} must be a mapping of settings")
    settings.pop("description", None)
    return settings


def make_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the recipe's settings, then ``overrides`` (``None`` values are ignored)."""
    settings: dict[str, Any] = load_recipe(recipe) if recipe else {}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    unknown = [k for k in settings if k not in _field_names()]
    if unknown:
        close = difflib.get_close_matches(unknown[0], _field_names(), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown setting {unknown[0]!r}{hint}")
    return TrainConfig(**settings).validate()
