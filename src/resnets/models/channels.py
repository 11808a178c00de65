"""Inner channels of residual blocks: which there are, and a network with fewer of them.

A block's *inner* channels run from one convolution, through its norm, into the next convolution of the same
branch (``conv1 → bn1 → conv2`` in a basic block; two such runs in a bottleneck). Removing some changes no shape
outside the block, so the residual stream, the shortcuts and every other block stay as they are. A network with
fewer inner channels is described by ``channels``: the number kept per producing convolution, e.g.
``{"layer1.0.conv1": 8}``, a model argument like any other (``create_model(name, channels=...)``), so a pruned
network is saved, loaded, fine-tuned, exported and served as its unpruned parent is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, cast

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Inner:
    """One run of inner channels: ``conv`` produces them, ``norm`` normalises them, ``consumer`` reads them."""

    block: nn.Module
    conv: str
    norm: str
    consumer: str

    def modules(self) -> tuple[nn.Conv2d, nn.Module, nn.Conv2d]:
        return getattr(self.block, self.conv), getattr(self.block, self.norm), getattr(self.block, self.consumer)

    @property
    def width(self) -> int:
        return getattr(self.block, self.conv).out_channels


def inner_channels(model: nn.Module) -> dict[str, Inner]:
    """Every run of inner channels of ``model``'s residual blocks, by the name of its producing convolution."""
    runs = {}
    for name, block in model.named_modules():
        for conv, norm, consumer in getattr(block, "inner", ()):
            runs[f"{name}.{conv}"] = Inner(block, conv, norm, consumer)
    return runs


def kept_width(count: float, width: int, multiple: int = 1) -> int:
    """The channels a run of ``width`` keeps for a wanted ``count``: the nearest multiple of ``multiple``, at
    least one multiple and at most ``width``."""
    return min(width, max(multiple, multiple * round(count / multiple)))


def _conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    pair = tuple[int, int]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], cast(pair, conv.kernel_size), cast(pair, conv.stride),
                    cast("str | pair", conv.padding), cast(pair, conv.dilation), bias=bias is not None,
                    padding_mode=conv.padding_mode)
    new.weight = nn.Parameter(weight.clone(), requires_grad=conv.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.clone(), requires_grad=cast(torch.Tensor, conv.bias).requires_grad)
    return new.train(conv.training).to(weight.device)


def _bias(conv: nn.Conv2d) -> torch.Tensor | None:
    return None if conv.bias is None else conv.bias.detach()


def _norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    if not isinstance(norm, nn.BatchNorm2d):
        raise ConfigError(f"inner channels normalised by {type(norm).__name__} cannot be removed (batch norm only)")
    new = type(norm)(len(keep), norm.eps, norm.momentum, norm.affine, norm.track_running_stats,
                     device=norm.weight.device if norm.affine else None)
    state = {k: v[keep] if v.dim() == 1 else v for k, v in norm.state_dict().items()}
    new.load_state_dict(state)
    return new.train(norm.training)


def keep_channels(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> None:
    """Keep only the inner channels ``keep[name]`` (indices) of each named run, in place: the producing
    convolution loses those output filters, the norm those features, the consumer those input channels."""
    runs = inner_channels(model)
    for name, indices in keep.items():
        if name not in runs:
            raise ConfigError(f"{type(model).__name__} has no inner channels {name!r}; it has "
                              f"{', '.join(list(runs)[:4])}{', ...' if len(runs) > 4 else ''}")
        run = runs[name]
        conv, norm, consumer = run.modules()
        if conv.groups != 1 or consumer.groups != 1:
            raise ConfigError(f"{name}: channels of grouped convolutions (ResNeXt) cannot be removed one by one")
        indices = torch.as_tensor(indices, dtype=torch.long)
        if len(indices) < 1 or int(indices.max()) >= run.width or len(indices.unique()) != len(indices):
            raise ConfigError(f"{name}: keep 1 to {run.width} distinct channels, got {len(indices)}")
        bias = _bias(conv)
        setattr(run.block, run.conv, _conv(conv, conv.weight.detach()[indices],
                                           None if bias is None else bias[indices]))
        setattr(run.block, run.norm, _norm(norm, indices))
        setattr(run.block, run.consumer, _conv(consumer, consumer.weight.detach()[:, indices], _bias(consumer)))


def narrow(model: nn.Module, channels: Mapping[str, int]) -> nn.Module:
    """``model`` with ``channels[name]`` inner channels in each named run (a freshly built network: the first
    ones of each layer's initialisation); the architecture of a pruned network."""
    runs = inner_channels(model)
    for name, n in channels.items():
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= getattr(runs.get(name), "width", n):
            raise ConfigError(f"channels[{name!r}] must be a whole number of channels from 1 to the layer's width, "
                              f"got {n!r}")
    keep_channels(model, {name: torch.arange(n) for name, n in channels.items()})
    return model
