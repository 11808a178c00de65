"""One way in: any source of weights — a shipped name (``resnet20_cifar10``), a published tag
(``resnet50.tv2_in1k``), a URL with its sha256, or a file (a ``resnets train`` checkpoint, described weights,
a torchvision/timm state dict) — read into one typed ``Checkpoint``, which every command then asks for what it
needs (``need``), so that a source without it is refused in one line that says how to supply it.

    ck = read_source("runs/x/best.pt")
    ck.model, ck.classes, ck.mean, ck.config       # config: the settings it was saved with
    net = ck.classifier()
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, cast

import torch
from torch import nn

from ..errors import CheckpointError
from .loading import META_KEY, extract_state_dict, load_state_dict_into, read_checkpoint, resolve_weights

if TYPE_CHECKING:
    from .resnet import StagedNet

Kind = Literal["training", "described", "state_dict"]
# what each kind is, in the words of an error message
KIND_WORDS = {"training": "a resnets training checkpoint", "described": "described weights",
              "state_dict": "a plain state dict"}
# what a description holds (a training checkpoint beside its weights, or a safetensors file's metadata)
DESCRIPTION = ("config", "classes", "mean", "std", "in_chans", "image_size", "crop_size")
_FIELDS = (*DESCRIPTION, "model")  # the entries that ``Checkpoint`` holds in fields of its own


@dataclass(frozen=True)
class Checkpoint:
    """What a source of weights holds, whatever its kind.

    ``model`` and ``model_args``: the architecture (None for a plain state dict read without ``model=``);
    ``classes``, ``in_chans``, ``mean``/``std``, ``image_size``/``crop_size``: how it sees images and what it
    predicts (for a plain state dict: the ImageNet classes where it has 1,000 outputs, else numbered ones, and
    the architecture's usual preprocessing — ``inferred`` names them); ``config``: the settings it was saved
    with (a whole training recipe for a ``resnets train`` checkpoint); ``meta``: everything else it carries
    (training state, WordNet ids, pruning and distillation records, where it was converted from).
    """

    source: str
    path: Path
    kind: Kind
    model: str | None
    model_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    classes: list[str] | None
    in_chans: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    image_size: int | None
    crop_size: int | None
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    inferred: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.source

    def need(self, *what: str, fix: str | None = None) -> "Checkpoint":
        """This checkpoint, or a CheckpointError naming the first of ``what`` (``"model"``, ``"classes"``,
        ``"training"``) it lacks and how to supply it (``fix``, else the usual way)."""
        for item in what:
            if item == "model" and self.model is None:
                raise CheckpointError(f"{self.source} is a plain state dict: name its architecture with "
                                      f"{fix or '--model NAME'} (resnets list shows them)")
            if item == "classes" and self.classes is None:
                raise CheckpointError(f"{self.source} holds no classifier (no fc.weight): "
                                      f"{fix or 'give weights with their classifier'}")
            if item == "training" and self.kind != "training":
                raise CheckpointError(f"{self.source} is {KIND_WORDS[self.kind]}, not a resnets training "
                                      f"checkpoint: {fix or 'give the last.pt or best.pt of a resnets train run'}")
        return self

    def network(self, **overrides: Any) -> nn.Module:
        """The architecture with these weights loaded strictly (``overrides``: ``num_classes``, ``in_chans``
        ... for an adapted copy, loaded as ``load_state_dict_into`` adapts), in eval mode on the CPU."""
        from .registry import create_model

        self.need("model")
        args = {"num_classes": len(self.classes) if self.classes else 0, "in_chans": self.in_chans or 3,
                **self.model_args, **overrides}
        model = create_model(cast(str, self.model), **args)
        load_state_dict_into(model, self.state_dict, adapt=bool(overrides))
        return model.eval()

    def classifier(self) -> StagedNet:
        """The network as it predicts its classes (what ``eval``, ``predict``, ``export`` ... run)."""
        from .registry import get_model_spec
        from .resnet import StagedNet

        self.need("model", "classes")
        if get_model_spec(cast(str, self.model)).family == "segmentation":
            raise CheckpointError(f"{self.source} holds the segmentation network {self.model}: resnets eval and "
                                  "predict take it as it is (or with --task segment); the other commands take "
                                  "classifiers")
        model = self.network()
        assert isinstance(model, StagedNet)  # every family but segmentation builds one
        return model

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint in the form ``resnets train`` writes it: ``config``, ``classes``, ``mean`` ... and
        the state dict under ``model``, with ``meta``'s entries beside them."""
        config = {**self.config, "model": self.model, "model_args": self.model_args}
        inferred = {"inferred": list(self.inferred)} if self.inferred else {}
        return {**self.meta, **inferred, "config": config, "classes": self.classes, "in_chans": self.in_chans,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                "image_size": self.image_size, "crop_size": self.crop_size, "model": self.state_dict}

    def describe(self) -> str:
        """One paragraph for ``resnets info``: what it is, where it came from, what it predicts."""
        classes = f"{len(self.classes)} classes ({', '.join(self.classes[:3])}, ...)" if self.classes else \
            "no classifier"
        lines = [f"{self.source}: {KIND_WORDS[self.kind]} ({self.path})",
                 f"  architecture  {self.model or 'unknown (a plain state dict: give --model)'}"
                 + (f" {json.dumps(self.model_args)}" if self.model_args else ""),
                 f"  predicts      {classes}",
                 f"  input         {self.in_chans} channels, {self.image_size} px"
                 + (f", centre crop {self.crop_size}" if self.crop_size else "")
                 + (f", mean {list(self.mean)} std {list(self.std)}" if self.mean and self.std else ""),
                 f"  recipe        {self._recipe_words()}"]
        for key in ("pruned", "distilled", "source", "weights", "epoch", "seed", "iterations", "val_top1",
                    "test_top1"):
            if key in self.meta:
                value = self.meta[key]
                lines.append(f"  {key:<13} {json.dumps(value)[:160] if not isinstance(value, (int, str)) else value}")
        if self.inferred:
            lines.append(f"  inferred      {', '.join(self.inferred)} (not recorded in the file)")
        return "\n".join(lines)

    def _recipe_words(self) -> str:
        if self.kind == "training":
            return "saved with it"
        named = self.meta.get("recipe")
        return f"{named} (by name: train on with --recipe {named})" if isinstance(named, str) else \
            "none (weights only)"


def read_description(path: str | Path) -> dict[str, Any] | None:
    """The description stored in a safetensors file's metadata (None for plain safetensors weights)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: damaged ({type(e).__name__}: {e})") from None
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: its description is not a JSON object (damaged)")
    return meta


def read_source(source: str | Path | Checkpoint, *, model: str | None = None) -> Checkpoint:
    """Read ``source`` (see ``resolve_weights``; a ``Checkpoint`` is taken as it is) into a ``Checkpoint``;
    ``model``: the architecture of a plain state dict, and for the other kinds a check that they hold it."""
    if isinstance(source, Checkpoint):
        if model is not None and source.model not in (None, model):
            raise CheckpointError(f"{source.source} holds weights for {source.model}, not {model}")
        return source if model is None or source.model == model else read_source(source.path, model=model)
    path = resolve_weights(source)
    kind: Kind
    if path.suffix == ".safetensors" and path.is_file():
        entries = read_description(path)
        tensors = read_checkpoint(path)
        entries, kind = ({**entries, "model": tensors}, "described") if entries is not None else ({}, "state_dict")
    else:
        obj = read_checkpoint(path)
        is_training = all(k in obj for k in ("model", "config", "classes")) and isinstance(obj["model"], Mapping)
        entries, kind = (obj, "training") if is_training else ({}, "state_dict")
        tensors = obj
    if kind == "state_dict":
        return _plain(str(source), path, extract_state_dict(tensors), model)
    return _described(str(source), path, kind, entries, model)


def _described(source: str, path: Path, kind: Kind, entries: dict[str, Any], model: str | None) -> Checkpoint:
    """A training checkpoint or described weights, its description checked field by field."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"cannot read checkpoint {source}: its description is damaged ({what})")

    config = entries.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise bad("no architecture in config.model")
    from .registry import get_model_spec

    try:
        get_model_spec(config["model"])
    except Exception:
        raise bad(f"unknown architecture {config['model']!r}") from None
    if model is not None and model != config["model"]:
        raise CheckpointError(f"{source} holds weights for {config['model']}, not {model}")
    classes = entries.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("classes is not a list of names")
    in_chans = entries.get("in_chans")
    if not isinstance(in_chans, int) or not 1 <= in_chans <= 64:
        raise bad("in_chans")
    mean, std = entries.get("mean"), entries.get("std")
    for name, v in (("mean", mean), ("std", std)):
        if not isinstance(v, (list, tuple)) or len(v) != in_chans or not all(isinstance(x, (int, float)) for x in v):
            raise bad(f"{name} is not {in_chans} numbers")
    sizes = [entries.get(k) for k in ("image_size", "crop_size")]
    if not isinstance(sizes[0], int) or sizes[0] < 1 or not (sizes[1] is None or isinstance(sizes[1], int)):
        raise bad("image_size / crop_size")
    state = extract_state_dict(entries["model"])
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise bad("model_args")
    mean_t, std_t = (tuple(float(x) for x in cast(list, v)) for v in (mean, std))
    return Checkpoint(source, path, kind, config["model"], dict(model_args), state, list(classes), in_chans,
                      mean_t, std_t, sizes[0], sizes[1], dict(config),
                      {k: v for k, v in entries.items() if k not in _FIELDS})


def _plain(source: str, path: Path, state: dict[str, torch.Tensor], model: str | None) -> Checkpoint:
    """A torchvision/timm-style state dict: what it predicts and how it reads images, inferred where ``model``
    names its architecture."""
    first = next((v for k, v in state.items() if k.endswith("weight") and v.dim() == 4), None)
    in_chans = int(first.shape[1]) if first is not None else None
    head = state.get("fc.weight")
    outputs = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    if model is None:
        return Checkpoint(source, path, "state_dict", None, {}, state, None, in_chans, None, None, None, None, {})
    from .imagenet import imagenet_names, imagenet_wnids
    from .registry import get_model_spec

    spec = get_model_spec(model)
    meta: dict[str, Any] = {}
    classes = None
    if outputs == 1000:
        classes, meta["wnids"] = imagenet_names(), imagenet_wnids()
    elif outputs is not None:
        classes = [str(i) for i in range(outputs)]
    imagenet_like = spec.input_size >= 128
    image_size = round(spec.input_size / 0.875) if imagenet_like else spec.input_size
    mean, std = (spec.mean, spec.std) if in_chans in (None, 3) else ((0.5,) * in_chans, (0.25,) * in_chans)
    config: dict[str, Any] = {"model": model, "model_args": {}, "data": "imagenet" if outputs == 1000 else None,
                              "val_size": None}
    return Checkpoint(source, path, "state_dict", model, {}, state, classes, in_chans or 3, tuple(mean), tuple(std),
                      image_size, spec.input_size if imagenet_like else None, config, meta,
                      ("classes", "preprocessing"))
