"""Training configuration: one flat, typed dataclass, filled from defaults, then a recipe (YAML), then overrides,
and checked on creation (types, ranges, choices) with one line naming the setting."""
from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from ..data.randaugment import RandAugmentPolicy
from ..errors import ConfigError, yaml_problem

Schedule = Literal["cosine", "linear", "step", "multistep", "poly", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Optimizer = Literal["sgd", "lamb", "muon"]
Loss = Literal["ce", "bce"]
Task = Literal["classify", "segment"]


def option(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A setting with its help text, which ``resnets train --help`` shows (``factory``: a mutable default)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on, checked when it is made (from Python, a recipe or the command
    line alike): a wrong type, a value out of range or an unknown choice raises ``ConfigError`` naming the
    setting. Epoch counts may be fractional; schedules step every iteration."""

    # what to train
    task: Task = option("classify", "classify: one class per image; segment: one per pixel (a segmentation "
                                    "network, e.g. fcn_resnet50, on images with masks)")
    model: str = option("resnet20", "the architecture, a registered name (resnets list)")
    model_args: dict[str, Any] = option(factory=dict, help="extra ResNet arguments, e.g. drop_path_rate")
    pretrained: str | None = option(None, "weights to start from (fine-tuning): a file, a shipped name or a "
                                          "published tag; a new class count gets a new head")
    freeze_stages: int | None = option(None, "freeze the stem and this many stages (batch-norm statistics too)")
    unfreeze_every: float | None = option(None, "gradual unfreezing: one more stage (deepest first) every N epochs")
    head_lr_mult: float = option(1.0, "learning-rate multiplier of the classifier")
    # data
    data: str = option("digits", "digits | cifar10 | cifar100 | an image folder, .tar(.gz), CIFAR batches, "
                                 "shards or a URL")
    data_root: str | None = option(None, "where the CIFAR batches are (or are downloaded to)")
    download: bool = option(False, "download CIFAR-10/100 if they are not in --data-root")
    image_size: int | None = option(None, "stored image size for image folders (default: the data's own)")
    val_size: float | None = option(None, "validation split held out of train (fraction or count); none: the "
                                          "data set's default; 0: no validation")
    subset: int | None = option(None, "train on N training images only, class-balanced (quick runs)")
    folds: int = option(0, "K-fold cross-validation: split the training data into K class-balanced folds and "
                           "validate on fold --fold, train on the rest; 0: off")
    fold: int = option(0, "the fold held out for validation (0 .. K-1) with --folds")
    strict: bool = option(False, "fail on an unreadable image instead of skipping it")
    stream: bool | None = option(None, "read image folders and shards from disk as training uses them; none: "
                                       "when the decoded set would take over a quarter of memory")
    workers: int | None = option(None, "worker processes that decode streamed data; none: the cores less one "
                                       "per training process")
    # optimisation
    epochs: float = option(30, "training epochs (may be fractional)")
    batch_size: int = option(128, "images per step (the global batch over all processes)")
    lr: float = option(0.1, "peak learning rate")
    optimizer: Optimizer = option("sgd", "sgd; lamb (You et al. 2019: Adam moments, a trust ratio per parameter); "
                                         "muon (Jordan et al. 2024: orthogonalised steps for convolution filters, "
                                         "SGD with lr and momentum for the rest)")
    muon_lr: float = option(0.02, "muon: the filters' learning rate (a step's size relative to the weights)")
    muon_momentum: float = option(0.95, "muon: the filters' Nesterov momentum")
    muon_ns_steps: int = option(5, "muon: Newton-Schulz iterations that orthogonalise each step")
    momentum: float = option(0.9, "SGD momentum")
    betas: list[float] = option(factory=lambda: [0.9, 0.999], help="LAMB's moment decay rates (beta1 beta2)")
    loss: Loss = option("ce", "ce: cross-entropy; bce: binary cross-entropy on one-hot or mixed targets "
                              "(ResNet strikes back)")
    bce_target_thresh: float | None = option(None, "bce: targets above this become 1, the others 0 (timm's 0.2)")
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(1e-4, "L2 weight decay")
    no_decay_norm_bias: bool = option(False, "exempt norm and bias parameters from weight decay")
    norm_lr_mult: float = option(1.0, "lr multiplier of batch-norm parameters; their weight decay is divided by it")
    whiten_bias_epochs: float = option(0.0, "airbench's whitening bias (networks with a whitening stem): trained at "
                                            "the batch-norm rate, its lr falling linearly to 0 over this many "
                                            "epochs, then frozen; 0: trained as any other bias throughout")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss")
    schedule: Schedule = option("cosine", "learning-rate schedule")
    final_lr_factor: float = option(0.0, '"linear": the lr falls linearly from lr to lr * this at the end')
    milestones: list[float] = option(factory=list, help='epochs at which "multistep" multiplies the lr by gamma')
    step_size: float = option(30, 'epochs between the lr steps of "step"')
    gamma: float = option(0.1, 'lr factor of each "step"/"multistep" step')
    poly_power: float = option(0.9, '"poly": the lr falls as (1 - progress) ** this (DeepLab\'s schedule)')
    warmup_epochs: float = option(0.0, "epochs of learning-rate warm-up")
    warmup_constant: bool = option(False, "constant lr * warmup_factor during warm-up (the paper's ResNet-110), "
                                          "else linear")
    warmup_factor: float = option(0.1, "the warm-up's starting lr, as a factor of lr")
    clip_grad: float | None = option(None, "clip the gradient norm to this")
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights (e.g. 0.999); it is "
                                           "evaluated and saved")
    lookahead_every: int = option(0, "airbench's lookahead: every N steps the weights restart from their slow "
                                     "average; 0: off")
    lookahead_decay: float = option(0.95**5, "the slow average's decay at the end (it rises as progress**3 from 0)")
    lr_reference_batch: int | None = option(None, "linear scaling: lr * batch_size / this")
    sync_bn: bool = option(False, "distributed: batch-norm statistics of the global batch")
    # augmentation
    crop_padding: int = option(4, "random crops from the image padded by this many pixels")
    pad_mode: Literal["zeros", "reflect"] = option("zeros", "how random crops pad the image")
    hflip: bool = option(True, "random horizontal flips")
    alternate_flips: bool = option(False, "with hflip: each image mirrored in every other epoch (a random half "
                                          "from the first)")
    rrc_scale: list[float] | None = option(None, "random-resized crops with this area range, e.g. 0.08 1")
    crop_size: int | None = option(None, "train on crops of this size (evaluation: centre crops)")
    test_size: int | None = option(None, "evaluate at this resolution (a centre crop), not the training crop's "
                                         "(FixRes: train at 160, test at 224)")
    test_crop_pct: float | None = option(None, "with test_size: the crop's share of the resized image (0.95 in "
                                               "RSB A3); none: the training crop's share")
    scale_range: list[float] = option(factory=lambda: [0.5, 2.0], help="segment: each training image and its mask "
                                                                        "rescaled by a random factor in this range")
    aux_weight: float = option(0.5, "segment: weight of the auxiliary head's loss (model_args aux_loss: true)")
    jitter: float = option(0.0, "colour jitter strength")
    randaugment: str | None = option(None,
                                     "RandAugment policy, timm's strings: rand-m9-mstd0.5-inc1 (m magnitude 0-10, "
                                           "n ops per image, mstd magnitude noise, inc1 the increasing ops)")
    aug_repeats: int = option(1, "repeated augmentation: each image of an epoch comes N times, differently "
                                 "augmented, in an epoch of the usual length (Hoffer et al. 2020; 3 in RSB A1/A2)")
    mixup: float = option(0.0, "mixup alpha; 0: off")
    cutmix: float = option(0.0, "cutmix alpha; 0: off")
    # knowledge distillation
    teachers: list[str] = option(factory=list, help="checkpoints of teacher networks: the student also learns "
                                                   "their (averaged) softened outputs")
    distill_alpha: float = option(0.9, "weight of the distillation loss; 1 - alpha goes to the label loss")
    distill_temperature: float = option(4.0, "softmax temperature T of the distillation targets")
    # speed and reproducibility
    precision: Precision = option("auto", "autocast dtype; auto: bf16 where the CPU (AVX512-BF16/AMX) or GPU "
                                          "runs it natively")
    channels_last: bool = option(True, "NHWC memory layout")
    compile: bool | None = option(None, "torch.compile the model; none: where it pays (a CPU with AMX, a run of "
                                         "5,000 steps or more)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    seed: int = option(0, "seed of the initialisation, the data order and the augmentation")
    deterministic: bool = option(False, "deterministic algorithms only (slower on a GPU)")
    # outputs
    out: str = option("runs/{model}-{data}", "output folder ({model} and {data} are filled in)")
    save_init: bool = option(False, "also write the starting weights to init.pt (loss-landscape interpolation "
                                    "starts from them)")
    checkpoint_every: int = option(0, "also write last.pt every N steps, to resume mid-epoch exactly; 0: at "
                                      "epoch ends only")
    eval_test: bool = option(True, "evaluate the best checkpoint on the test split once, at the end")
    tta_flip: bool = option(False, "test-time augmentation: average with the mirrored image")
    tta_translate: bool = option(False, "also average over one-pixel shifts (up-left and down-right)")
    progress: bool = option(True, "show a progress bar")
    tensorboard: bool = option(True, "write TensorBoard logs")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check every setting's type, then the ranges; the first problem raises ``ConfigError``."""
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            problem = type_problem(getattr(self, f.name), hints[f.name])
            if problem:
                raise ConfigError(f"setting {f.name!r} must be {problem}, got {getattr(self, f.name)!r}")
        for name, (ok, allowed) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ConfigError(f"setting {name!r} must be {allowed}, got {value!r}")
        if self.randaugment is not None:
            RandAugmentPolicy.parse(self.randaugment)  # one line naming what cannot be read
        if self.folds and self.fold >= self.folds:
            raise ConfigError(f"setting 'fold' must be below folds ({self.folds}), got {self.fold}")
        if self.folds and self.val_size not in (None, 0):
            raise ConfigError("with folds, a fold is the validation split: leave out val_size")
        if self.out_dir().is_file():
            raise ConfigError(f"output folder {self.out_dir()} is a file: choose another --out")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def out_dir(self) -> Path:
        data = Path(self.data).name.split(".")[0] if self.data else "data"
        return Path(self.out.format(model=self.model, data=data))


# The allowed range of each number (None is always allowed where the type allows it).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: v > 0, "> 0"),
    "batch_size": (lambda v: 1 <= v <= 65536, "in [1, 65536]"),
    "lr": (lambda v: 0 < v <= 10, "in (0, 10]"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "aug_repeats": (lambda v: 1 <= v <= 16, "in [1, 16]"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "muon_lr": (lambda v: v > 0, "> 0"),
    "muon_momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "muon_ns_steps": (lambda v: 1 <= v <= 20, "1 to 20"),
    "bce_target_thresh": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ema_decay": (lambda v: 0 < v < 1, "in (0, 1)"),
    "lookahead_every": (lambda v: v >= 0, ">= 0 steps"),
    "lookahead_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "clip_grad": (lambda v: v > 0, "> 0"),
    "final_lr_factor": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "norm_lr_mult": (lambda v: v > 0, "> 0"),
    "whiten_bias_epochs": (lambda v: v >= 0, ">= 0 epochs"),
    "head_lr_mult": (lambda v: v > 0, "> 0"),
    "val_size": (lambda v: v >= 0, ">= 0 (a fraction below 1, or a count)"),
    "subset": (lambda v: v >= 1, ">= 1"),
    "folds": (lambda v: v == 0 or v >= 2, "0 (off) or >= 2"),
    "fold": (lambda v: v >= 0, ">= 0"),
    "workers": (lambda v: v >= 0, ">= 0"),
    "checkpoint_every": (lambda v: v >= 0, ">= 0 steps"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "warmup_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "lr_reference_batch": (lambda v: v >= 1, ">= 1"),
    "unfreeze_every": (lambda v: v > 0, "> 0 epochs"),
    "freeze_stages": (lambda v: v >= 0, ">= 0"),
    "crop_padding": (lambda v: v >= 0, ">= 0"),
    "crop_size": (lambda v: v >= 1, ">= 1"),
    "test_size": (lambda v: v >= 1, ">= 1"),
    "test_crop_pct": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "image_size": (lambda v: v >= 8, ">= 8"),
    "step_size": (lambda v: v > 0, "> 0 epochs"),
    "gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "poly_power": (lambda v: v > 0, "> 0"),
    "scale_range": (lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 8, "two numbers 0 < low <= high <= 8"),
    "aux_weight": (lambda v: 0 <= v <= 10, "in [0, 10]"),
    "jitter": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "mixup": (lambda v: v >= 0, ">= 0"),
    "cutmix": (lambda v: v >= 0, ">= 0"),
    "rrc_scale": (lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "two numbers 0 < low <= high <= 1"),
    "milestones": (lambda v: all(m > 0 for m in v), "epochs > 0"),
    "distill_alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "distill_temperature": (lambda v: 0 < v <= 100, "in (0, 100]"),
}


# what each machine decides for itself when it resumes a run; every other setting is the run's own
PER_MACHINE = ("precision", "device", "workers", "progress", "compile", "channels_last", "tensorboard", "out")


def changed_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings of ``wanted`` (a ``TrainConfig.to_dict()``) that differ from a saved run's ``saved``, the
    per-machine ones aside; a setting added since the run was saved had its default then."""
    defaults = TrainConfig().to_dict()
    return sorted(k for k, v in wanted.items() if k not in PER_MACHINE and saved.get(k, defaults[k]) != v)


def type_problem(value: Any, tp: Any) -> str | None:
    """What ``value`` must be to have type ``tp`` ("a whole number", "one of a, b"), or None if it has it.
    Nothing is converted: 12.5 is not a batch size and "no" is not a boolean."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if args and type(None) in args:  # X | None
        return None if value is None else type_problem(value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        return None if value in args else f"one of {', '.join(map(str, args))}"
    if origin is list:
        if not isinstance(value, list) or any(type_problem(v, args[0]) for v in value):
            return f"a list of {_NAMES[args[0]]}s"
        return None
    if origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        return None if ok else "a mapping of names to values"
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if tp is str:
        return None if isinstance(value, str) else "text"
    return None


_NAMES = {int: "whole number", float: "number", str: "text"}


def _field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


class _RecipeLoader(yaml.SafeLoader):
    """YAML as people write numbers: ``1e-3`` is a float (YAML 1.1 reads it as a string without a dot)."""


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                    list("-+0123456789."))


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
        settings = yaml.load(text, Loader=_RecipeLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {name_or_path} is not valid YAML: {yaml_problem(e)}") from None
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
        hint = (f"; did you mean {close[0]}?" if close else
                "; `resnets train --help` lists the settings (setting name_of_it is option --name-of-it)")
        raise ConfigError(f"unknown setting {unknown[0]!r}{hint}")
    return TrainConfig(**settings).validate()
