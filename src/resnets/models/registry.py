"""The model registry: every named network is a builder plus its arguments (timm's ``model_args`` pattern)."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from .resnet import StagedNet


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: ``builder(**args, **overrides)`` makes it."""

    name: str
    builder: Callable[..., nn.Module]
    args: dict[str, Any]
    summary: str
    family: str  # "imagenet" or "cifar"
    reference: str  # where the layout and numbers come from
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(ConfigError):
    pass


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"resnet*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnets list`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int = 3,
    pretrained: str | Path | bool | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    weights: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered network by name.

    Args:
        name: a name from ``list_models()``, optionally with a weights tag (``"resnet50.a1_in1k"``).
        num_classes: classifier size; defaults to the family's (1000 ImageNet, 10 CIFAR). Pretrained weights
            for another class count keep everything but the classifier.
        in_chans: input channels (pretrained stem weights are adapted when they differ).
        pretrained: ``True``: the published ImageNet weights of the name's tag, else the model's default
            (``resnets list --weights``); or a local ``.pth``/``.pt``/``.safetensors`` file (weights only).
        features_only: return a ``FeatureExtractor`` that gives the stage outputs.
        out_indices: which stages a feature extractor returns.
        weights: a weights tag to load (``"tv_in1k"``), as ``pretrained=True`` with that tag.
        **overrides: any ``ResNet`` argument, e.g. ``shortcut="B"``, ``drop_path_rate=0.1``; and
            ``channels``: the inner channels kept per block convolution, the architecture of a pruned network
            (``models.channels``).
    """
    from .loading import load_pretrained, load_state_dict_into
    from .pretrained import get_weights, load_weights, split_name
    from .resnet import FeatureExtractor, StagedNet

    from .channels import narrow

    name, tag = split_name(name)
    channels = overrides.pop("channels", None)
    published = get_weights(name, weights or tag) if pretrained is True or weights is not None else None
    if published is not None:
        overrides = {**published.model_args, **overrides}  # e.g. Keras' ResNet50 is v1 (stride in the 1x1)
    spec = get_model_spec(name)
    _check_settings(name, spec.builder, overrides)
    args = {**spec.args, **overrides, "in_chans": in_chans}
    if num_classes is not None:
        args["num_classes"] = num_classes
    model = spec.builder(**args)
    if channels:
        narrow(model, channels)
    if published is not None:
        load_state_dict_into(model, load_weights(published))
    elif isinstance(pretrained, (str, Path)):
        load_pretrained(model, pretrained)
    if features_only:
        return FeatureExtractor(cast(StagedNet, model), out_indices)
    return model


def create_classifier(name: str, **kwargs: Any) -> StagedNet:
    """``create_model`` for the classifiers (every registered network but the segmentation ones), typed as their
    uniform API (``StagedNet``: stages, ``freeze``, ``forward_features``...)."""
    from .resnet import StagedNet

    model = create_model(name, **kwargs)
    if not isinstance(model, StagedNet):
        raise ConfigError(f"{name} is a {type(model).__name__}, not a classifier: pick a classifier from "
                          "`resnets list`")
    return model


def _check_settings(name: str, builder: Callable[..., nn.Module], overrides: dict[str, Any]) -> None:
    """Refuse a setting that ``builder`` does not take, naming the closest one it does."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k in params if k != "in_chans"]
    for key in overrides:
        if key not in params:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; its settings: {', '.join(known)}"
            raise ConfigError(f"{name} has no setting {key!r}{hint}")
