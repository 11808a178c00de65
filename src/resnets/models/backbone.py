"""ResNets as detection backbones, in torchvision's conventions: frozen batch norm, ``trainable_layers`` counted
from the top, and a feature pyramid (Lin et al. 2017, "Feature Pyramid Networks for Object Detection") whose
output is an ``OrderedDict`` of 256-channel maps ``"0"``..``"3"`` plus ``"pool"``, so that
``torchvision.models.detection.FasterRCNN(create_backbone("resnet50", fpn=True), num_classes)`` takes it.
State-dict keys are torchvision's ``BackboneWithFPN`` keys (``body.*``, ``fpn.inner_blocks.*``, ...).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .resnet import ResNet

TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")  # torchvision's, from the top


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, as buffers (torchvision's keys, no batch count):
    what a detector's backbone uses when its batches are a few large images."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    @classmethod
    def of(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """``bn`` with its current statistics and affine parameters, frozen."""
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(bn, name))
        return frozen


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` inside ``module`` replaced by its ``FrozenBatchNorm2d`` (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d.of(child))
        else:
            freeze_batch_norm(child)
    return module


class FeaturePyramid(nn.Module):
    """Top-down pathway with lateral 1x1 connections and 3x3 smoothing (torchvision's FeaturePyramidNetwork with
    LastLevelMaxPool): maps of ``out_channels`` at each input's stride, and one more at twice the last stride."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1))
                                          for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(cast(torch.Tensor, m.bias))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        last = self.inner_blocks[-1](maps[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[i](maps[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        return outs + [F.max_pool2d(outs[-1], kernel_size=1, stride=2)]  # "pool": LastLevelMaxPool


class Backbone(nn.Module):
    """A ResNet's stages ``returned_layers`` (1..4) through a feature pyramid: ``out_channels`` and an
    ``OrderedDict`` of maps named ``"0"``, ``"1"``, ... and ``"pool"``."""

    def __init__(self, body: ResNet, returned_layers: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        body.reset_classifier(0)
        for i in range(max(returned_layers) + 1, body.num_stages + 1):  # stages above the pyramid: not run
            delattr(body, f"layer{i}")
        body.num_stages = max(returned_layers)
        self.body = body
        self.returned_layers = tuple(returned_layers)
        self.fpn = FeaturePyramid([body.feature_info[i]["num_chs"] for i in self.returned_layers], out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.fpn(self.body.forward_intermediates(x, self.returned_layers))
        names = [str(i) for i in range(len(self.returned_layers))] + ["pool"]
        return OrderedDict(zip(names, maps))


def freeze_for_detection(model: ResNet, trainable_layers: int) -> None:
    """torchvision's rule: only the top ``trainable_layers`` of layer4, layer3, layer2, layer1, conv1 train (5:
    all, the stem's norm included)."""
    if not 0 <= trainable_layers <= 5:
        raise ConfigError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    train = list(TRAINABLE_ORDER[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(layer) for layer in train))


def create_backbone(name: str, *, fpn: bool = True, trainable_layers: int = 3,
                    returned_layers: Sequence[int] = (1, 2, 3, 4), norm: Literal["frozen", "batch"] = "frozen",
                    pretrained: str | bool | None = None, out_channels: int = 256, **overrides: object) -> nn.Module:
    """A detection backbone from a zoo ResNet, as torchvision's ``resnet_fpn_backbone``: batch norm frozen
    (``norm="frozen"``) and the top ``trainable_layers`` training; with ``fpn``, a feature pyramid over the
    stages ``returned_layers``, else the network itself (stage maps through ``forward_intermediates``).
    ``pretrained`` and ``overrides`` are ``create_model``'s (e.g. ``pretrained=True``, ``output_stride=16``)."""
    from .registry import create_model

    if norm not in ("frozen", "batch"):
        raise ConfigError(f"norm must be 'frozen' or 'batch', got {norm!r}")
    if not returned_layers or list(returned_layers) != sorted(set(returned_layers)) or not set(returned_layers) <= {
            1, 2, 3, 4}:
        raise ConfigError(f"returned_layers must be increasing stages among 1..4, got {list(returned_layers)}")
    model = create_model(name, pretrained=pretrained, **overrides)  # type: ignore[arg-type]
    if not isinstance(model, ResNet) or model.num_stages != 4 or model.maxpool is None:
        raise ConfigError(f"{name} is not an ImageNet ResNet with four stages: detection backbones take one")
    if norm == "frozen":
        freeze_batch_norm(model)  # after loading: the weights' statistics are the ones frozen
    freeze_for_detection(model, trainable_layers)
    return Backbone(model, returned_layers, out_channels) if fpn else model
