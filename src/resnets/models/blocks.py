"""Residual blocks: BasicBlock and Bottleneck, post-activation (He et al. 2015) and pre-activation (He et al. 2016).

``dilation=(first, rest)`` dilates the 3x3 convolutions (a dilated stage, for a smaller output stride): a
bottleneck's one 3x3 takes ``first``; a basic block's first 3x3 takes ``first`` and its second ``rest``.

Every block computes ``y = F(x) + shortcut(x)``; with ``shortcut=None`` it computes ``y = F(x)``,
the paper's plain network. Attribute names follow torchvision (``conv1``, ``bn1``, ..., ``downsample``)
and timm (``se``), so their state dicts load unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError

from .layers import DropPath, NormLayer, SqueezeExcite, conv1x1, conv3x3


@dataclass(frozen=True)
class BlockOptions:
    """Block settings shared by a whole network (the per-block ones are stride, shortcut and drop-path)."""

    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # width per group; 128 gives Wide ResNet-50-2
    norm_layer: NormLayer = nn.BatchNorm2d
    se_ratio: float = 0.0  # squeeze-and-excitation reduction, 0 = off
    stride_in_1x1: bool = False  # ResNet v1 (stride on the first 1x1) instead of v1.5

    def check_basic(self) -> None:
        if self.groups != 1 or self.base_width != 64:
            raise ConfigError("basic blocks support only groups=1 and base_width=64; use a bottleneck network")

    def bottleneck_dims(self, planes: int, stride: int) -> tuple[int, int, int]:
        """Inner width, stride of the first 1x1 and stride of the 3x3."""
        width = int(planes * (self.base_width / 64.0)) * self.groups
        return (width, stride, 1) if self.stride_in_1x1 else (width, 1, stride)


class _ResidualBlock(nn.Module):
    """What all blocks share: the shortcut, optional squeeze-and-excitation and stochastic depth."""

    expansion = 1
    preact = False
    # The block's inner channels, as (producing convolution, its norm, consuming convolution): the channels that
    # pruning may remove without touching the residual stream (models/channels.py).
    inner: tuple[tuple[str, str, str], ...] = ()

    def _add_residual_parts(self, out_chs: int, shortcut: nn.Module | None, se_ratio: float, drop_path: float) -> None:
        """Called last in each block's ``__init__``, so that state-dict keys come in torchvision's/timm's order."""
        self.se = SqueezeExcite(out_chs, se_ratio) if se_ratio > 0 else None
        self.downsample = shortcut
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _merge(self, branch: torch.Tensor, shortcut_in: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            branch = self.se(branch)
        branch = self.drop_path(branch)
        if self.downsample is None:
            return branch
        return branch + self.downsample(shortcut_in)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so the block begins as (near) identity (Goyal et al. 2017)."""
        raise NotImplementedError


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34, the CIFAR ResNets, Wide ResNets)."""

    expansion = 1
    inner = (("conv1", "bn1", "conv2"),)

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
        drop_path: float = 0.0,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        opts.check_basic()
        super().__init__()
        self.conv1 = conv3x3(in_chs, planes, stride, dilation=dilation[0])
        self.bn1 = opts.norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation[1])
        self.bn2 = opts.norm_layer(planes)
        self._add_residual_parts(planes, shortcut, opts.se_ratio, drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x), before squeeze-and-excitation and the shortcut."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self._merge(self.branch(x), x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(cast(torch.Tensor, self.bn2.weight))


class HighwayBlock(BasicBlock):
    """A highway block (Srivastava, Greff and Schmidhuber 2015) built like a basic block:
    ``relu(T(x) * F(x) + (1 - T(x)) * shortcut(x))`` with a transform gate ``T(x) = sigmoid(conv1x1(x) + b)``
    per channel and position; ``b`` starts at ``gate_bias`` (negative: the gates start mostly closed, carrying
    the input, as the paper advises). Closed gates make the block its shortcut; open ones, a plain block."""

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 opts: BlockOptions = BlockOptions(), drop_path: float = 0.0, dilation: tuple[int, int] = (1, 1),
                 gate_bias: float = -2.0) -> None:
        if shortcut is None:
            raise ConfigError("a highway block carries its input: it needs a shortcut (option A, B or C)")
        super().__init__(in_chs, planes, stride, shortcut, opts, drop_path, dilation)
        self.gate = nn.Conv2d(in_chs, planes, 1, stride, bias=True)
        nn.init.constant_(cast(torch.Tensor, self.gate.bias), gate_bias)
        self.openness: float | None = None  # the mean of T(x) over the last batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.branch(x))
        t = torch.sigmoid(self.gate(x))
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            self.openness = float(t.detach().float().mean())  # a Python number: not in traced graphs
        shortcut = cast(nn.Module, self.downsample)  # a highway block always has one (checked in __init__)
        return self.relu(t * out + (1 - t) * shortcut(x))


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by ``expansion`` (ResNet-50/101/152).

    The stride sits on the 3x3 convolution (ResNet v1.5, torchvision); ``stride_in_1x1=True``
    puts it on the first 1x1 as in the original paper (v1).
    """

    expansion = 4
    inner = (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3"))

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
        drop_path: float = 0.0,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        out_chs = planes * self.expansion
        super().__init__()
        width, s1, s3 = opts.bottleneck_dims(planes, stride)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn1 = opts.norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups, dilation[0])
        self.bn2 = opts.norm_layer(width)
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = opts.norm_layer(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self._add_residual_parts(out_chs, shortcut, opts.se_ratio, drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x), before squeeze-and-excitation and the shortcut."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self._merge(self.branch(x), x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(cast(torch.Tensor, self.bn3.weight))


class _PreActBlock(_ResidualBlock):
    """Pre-activation ordering: BN-ReLU before each convolution, nothing after the addition.

    A projection shortcut reads the pre-activated input (as in "Identity Mappings"); a
    parameter-free one reads the raw input, so the identity path stays clean.
    """

    preact = True

    def _shortcut_input(self, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return pre if isinstance(self.downsample, nn.Conv2d) else x


class PreActBasicBlock(_PreActBlock):
    expansion = 1
    inner = (("conv1", "bn2", "conv2"),)

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
        drop_path: float = 0.0,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        opts.check_basic()
        super().__init__()
        self.bn1 = opts.norm_layer(in_chs)
        self.conv1 = conv3x3(in_chs, planes, stride, dilation=dilation[0])
        self.bn2 = opts.norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation[1])
        self.relu = nn.ReLU(inplace=True)
        self._add_residual_parts(planes, shortcut, opts.se_ratio, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return self._merge(out, self._shortcut_input(x, pre))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(_PreActBlock):
    expansion = 4
    inner = (("conv1", "bn2", "conv2"), ("conv2", "bn3", "conv3"))

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
        drop_path: float = 0.0,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        out_chs = planes * self.expansion
        super().__init__()
        width, s1, s3 = opts.bottleneck_dims(planes, stride)
        self.bn1 = opts.norm_layer(in_chs)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn2 = opts.norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups, dilation[0])
        self.bn3 = opts.norm_layer(width)
        self.conv3 = conv1x1(width, out_chs)
        self.relu = nn.ReLU(inplace=True)
        self._add_residual_parts(out_chs, shortcut, opts.se_ratio, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return self._merge(out, self._shortcut_input(x, pre))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]
