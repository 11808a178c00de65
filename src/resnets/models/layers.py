"""Small layers shared by the residual blocks: shortcuts, squeeze-and-excitation, drop-path."""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

NormLayer = Callable[[int], nn.Module]
# "A": parameter-free (identity, or subsample + zero-pad where the shape changes), paper section 3.3.
# "B": identity, projection only where the shape changes (torchvision's choice).
# "C": projection on every block.
# None: no shortcut at all (the paper's "plain" networks).
Shortcut = Literal["A", "B", "C"] | None


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=dilation, groups=groups, dilation=dilation,
                     bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (timm's rule for SE widths)."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def global_avg_pool(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """The mean over the spatial dimensions, computed as ``x.mean((2, 3))`` computes it (a sum, then a division),
    but with a gradient that is a broadcast, which keeps a channels-last ``x``'s gradient channels-last (the
    mean's comes back channels-first, and mixed layouts slow the backward pass down)."""
    return x.sum((2, 3), keepdim=keepdim) / (x.shape[-2] * x.shape[-1])


class PadShortcut(nn.Module):
    """Option A: subsample spatially by ``stride`` and append zero channels up to ``out_chs``."""

    def __init__(self, out_chs: int, stride: int) -> None:
        super().__init__()
        self.out_chs = out_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # the values of x[:, :, ::stride, ::stride]; unlike slicing, whose gradient comes back
            # channels-first, a 1x1 pooling keeps a channels-last gradient channels-last (mixed layouts
            # made a bfloat16 ResNet-20 training step ~7% slower)
            x = F.avg_pool2d(x, 1, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.out_chs - x.shape[1]))

    def extra_repr(self) -> str:
        return f"out_chs={self.out_chs}, stride={self.stride}"


def make_shortcut(
    kind: Shortcut,
    in_chs: int,
    out_chs: int,
    stride: int,
    norm_layer: NormLayer,
    *,
    avg_down: bool = False,
    with_norm: bool = True,
    dilated: bool = False,
) -> nn.Module | None:
    """The shortcut branch of one block; ``None`` means the block has no shortcut (plain network).

    ``avg_down`` is ResNet-D's downsampling (average-pool, then a stride-1 projection); in a ``dilated`` stage
    the pool keeps the resolution (2x2, stride 1, "same" padding, as timm's).
    ``with_norm=False`` gives the bare 1x1 projection of pre-activation blocks.
    """
    if kind is None:
        return None
    if kind not in ("A", "B", "C"):
        raise ConfigError(f"unknown shortcut option {kind!r}: expected 'A', 'B', 'C' or None")
    same_shape = stride == 1 and in_chs == out_chs
    if kind == "A" or (kind == "B" and same_shape):
        return nn.Identity() if same_shape else PadShortcut(out_chs, stride)
    if not with_norm:
        return conv1x1(in_chs, out_chs, stride)
    if avg_down:
        pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                else SameAvgPool2x2() if dilated else nn.Identity())
        return nn.Sequential(pool, conv1x1(in_chs, out_chs), norm_layer(out_chs))
    return nn.Sequential(conv1x1(in_chs, out_chs, stride), norm_layer(out_chs))


class SameAvgPool2x2(nn.Module):
    """A 2x2 average at stride 1 that keeps the size: the input padded by one zero row and column at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with timm's key names (``fc1``, ``fc2``)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        rd = make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(global_avg_pool(x, keepdim=True))))
        return x * s.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"drop-path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"
