"""The ODE view of residual networks (Haber and Ruthotto 2017; Chen et al. 2018): a stage of residual blocks
``x + h f(x)`` is Euler's method for ``dx/dt = f(x)`` over ``[0, horizon]`` with step ``h = horizon / steps``.
With one ``f`` shared by every step (weight-tied), the number of steps is a choice made at evaluation: more
steps approximate the same flow more finely. An untied stack has its own ``f`` per step, as a ResNet does."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .layers import conv3x3
from .resnet import FeatureInfo, StagedNet


def _norm(width: int) -> nn.GroupNorm:
    # group norm has no running statistics: the same f can be evaluated with any number of steps
    return nn.GroupNorm(min(8, width), width)


def residual_function(width: int) -> nn.Sequential:
    """``f``: norm, ReLU, 3x3 convolution, twice (a pre-activation residual branch)."""
    return nn.Sequential(_norm(width), nn.ReLU(), conv3x3(width, width), _norm(width), nn.ReLU(), conv3x3(width, width))


class EulerStage(nn.Module):
    """``steps`` Euler steps ``x <- x + h f_k(x)`` with ``h = horizon / steps``; ``tied``: ``f_k = f``."""

    def __init__(self, width: int, steps: int, tied: bool = True, horizon: float = 1.0) -> None:
        super().__init__()
        if steps < 1 or horizon <= 0:
            raise ConfigError(f"an Euler stage needs steps >= 1 and a horizon > 0, got {steps} and {horizon}")
        self.fs = nn.ModuleList(residual_function(width) for _ in range(1 if tied else steps))
        self.steps, self.tied, self.horizon = steps, tied, horizon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.horizon / self.steps
        for k in range(self.steps):
            x = x + h * self.fs[0 if self.tied else k](x)
        return x


class ODENet(StagedNet):
    """A CIFAR network of three Euler stages (widths 16, 32, 64), a strided 3x3 transition between them."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, *, widths: tuple[int, ...] = (16, 32, 64),
                 steps: int = 3, tied: bool = True, horizon: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.tied = num_classes, in_chans, tied
        self.grad_checkpointing: tuple[int, ...] = ()
        self.frozen_stages: int | None = None
        self.conv1 = conv3x3(in_chans, widths[0])
        self.feature_info, in_chs, reduction = FeatureInfo([dict(num_chs=widths[0], reduction=1, module="conv1")]), \
            widths[0], 1
        for i, width in enumerate(widths):
            parts: list[nn.Module] = []
            if i > 0:
                reduction *= 2
                parts += [conv3x3(in_chs, width, 2), _norm(width), nn.ReLU()]
            self.add_module(f"layer{i + 1}", nn.Sequential(*parts, EulerStage(width, steps, tied, horizon)))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layer{i + 1}"))
            in_chs = width
        self.num_stages, self.num_features = len(widths), in_chs
        self.norm, self.relu = _norm(in_chs), nn.ReLU()
        self.fc = self.new_classifier(num_classes)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def stem_modules(self) -> list[nn.Module]:
        return [self.conv1]

    def set_steps(self, steps: int) -> None:
        """Evaluate the same flow with another number of Euler steps (weight-tied networks only)."""
        if not self.tied:
            raise ConfigError("an untied network has one function per step: its number of steps is fixed")
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        for m in self.modules():
            if isinstance(m, EulerStage):
                m.steps = steps
