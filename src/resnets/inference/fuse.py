"""Folding batch norm into the convolution before it, for inference: ``y = conv'(x)`` with
``W' = W * gamma / sqrt(var + eps)`` and ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``."""
from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution that computes ``bn(conv(x))`` of the eval-mode ``bn``."""
    mean, var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)  # eval mode: tracked
    scale = bn.weight / torch.sqrt(var + bn.eps)
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    fused.bias = nn.Parameter((bias - mean) * scale + bn.bias)
    return fused


def _conv_bn_pairs(module: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(owner of the conv, conv name, norm name) for each norm of ``module`` that directly follows a conv.

    A ``convN`` that is a Sequential ending in a conv (ResNet-D's deep stem) counts as that last conv.
    """
    names = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        keys = list(names)
        return [(module, a, b) for a, b in zip(keys, keys[1:])
                if isinstance(names[a], nn.Conv2d) and isinstance(names[b], nn.BatchNorm2d)]
    if getattr(module, "preact", False):  # pre-activation: each norm comes before its convolution
        return []
    pairs = []
    for name, child in names.items():
        bn_name = f"bn{name[4:]}"
        if not name.startswith("conv") or not isinstance(names.get(bn_name), nn.BatchNorm2d):
            continue
        if isinstance(child, nn.Conv2d):
            pairs.append((module, name, bn_name))
        elif isinstance(child, nn.Sequential) and isinstance(child[-1], nn.Conv2d):
            pairs.append((child, str(len(child) - 1), bn_name))
    return pairs


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv-then-batch-norm pair folded into one convolution.

    The norms become ``nn.Identity``; outputs equal the eval-mode model's to float rounding (about 1e-6).
    Pre-activation norms (which come before their convolution) are left as they are.
    """
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for owner, conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(owner, conv_name), getattr(module, bn_name)
            setattr(owner, conv_name, fold_conv_bn(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return model
