"""A small residual network for fast CIFAR training (the ``cifar10-fast`` and ``cifar10-fast-sgd`` recipes).

The layout is airbench94's (Jordan 2024), which descends from Page's ResNet-9 (2018), with identity
shortcuts: a 2x2 convolution initialised to whiten the image patches (ZCA-like, fixed), then three stages
of ``conv 3x3 -> 2x2 max-pool -> BN -> GELU`` followed by one residual block
``y = x + GELU(BN(conv 3x3(x)))``, then a global max-pool and a bias-free linear classifier whose logits
are scaled by 1/9. Batch norms have no trainable scale (only a bias), and every 3x3 convolution starts
as (part of) the identity (Dirac init), so the network starts close to a shallow one.
"""
from __future__ import annotations

from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .resnet import FeatureInfo, StagedNet


class BiasNorm(nn.BatchNorm2d):
    """Batch norm with its scale fixed at 1 (only the bias trains); fast running statistics."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def dirac_conv3x3(in_chs: int, out_chs: int) -> nn.Conv2d:
    """A 3x3 convolution whose first ``min(in, out)`` filters start as the identity (the rest at PyTorch's init)."""
    conv = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(in_chs, out_chs)])
    return conv


class ConvPool(nn.Module):
    """A stage's entry: ``conv 3x3 -> 2x2 max-pool -> BN -> GELU`` (widens and halves the resolution).

    The norm can still be folded into the convolution for inference: its scale is positive (fixed at 1 over
    the running deviation), and max-pooling commutes with a positive per-channel scale and shift.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = dirac_conv3x3(in_chs, out_chs)
        self.bn = BiasNorm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.bn(F.max_pool2d(self.conv(x), 2)))


class ResidualConv(nn.Module):
    """``y = x + GELU(BN(conv 3x3(x)))``; ``shortcut=False`` gives the plain twin ``y = GELU(BN(conv(x)))``."""

    def __init__(self, chs: int, shortcut: bool = True) -> None:
        super().__init__()
        self.conv = dirac_conv3x3(chs, chs)
        self.bn = BiasNorm(chs)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.bn(self.conv(x)))
        return x + y if self.shortcut else y


class FastResNet(StagedNet):
    """The ``fastresnet8`` network (see the module docstring), with the uniform model API.

    Args:
        num_classes: classifier outputs (0: pooled features).
        in_chans: input channels; the whitening stem has ``2 * in_chans * 4`` filters (each patch direction
            and its negative).
        widths: output width of each stage.
        shortcut: identity shortcuts around the second convolution of each stage (False: plain twin).
        logit_scale: the logits are multiplied by this (1/9 in airbench).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, *, widths: Sequence[int] = (64, 256, 256),
                 shortcut: bool = True, logit_scale: float = 1 / 9) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 0 or not widths:
            raise ConfigError(f"in_chans must be >= 1, num_classes >= 0 and widths non-empty, got "
                              f"{in_chans}, {num_classes}, {tuple(widths)}")
        self.num_classes, self.in_chans, self.logit_scale = num_classes, in_chans, logit_scale
        self.grad_checkpointing: tuple[int, ...] = ()
        self.frozen_stages: int | None = None
        self.whiten = nn.Conv2d(in_chans, 2 * in_chans * 4, 2, bias=True)  # set by init_from_data
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(cast(torch.Tensor, self.whiten.bias))
        in_chs, reduction = self.whiten.out_channels, 1
        self.feature_info = FeatureInfo([dict(num_chs=in_chs, reduction=1, module="whiten")])
        for i, width in enumerate(widths):
            reduction *= 2
            self.add_module(f"layer{i + 1}", nn.Sequential(ConvPool(in_chs, width), ResidualConv(width, shortcut)))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layer{i + 1}"))
            in_chs = width
        self.num_stages, self.num_features, self.norm = len(widths), in_chs, None
        self.fc = self.new_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.whiten(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # The max is taken in float32 (exact: it picks one of the values): amax's backward sends the gradient to
        # the positions equal to the max, and torch.compile keeps bfloat16 activations in float32 inside its
        # fused kernels, so a bfloat16 max matched no position there and the gradient became 0 / 0 = NaN.
        x = x.float().amax((2, 3))
        return x if pre_logits else self.fc(x) * self.logit_scale

    def stem_modules(self) -> list[nn.Module]:
        return [self.whiten]

    def fixed_parameters(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, self.whiten.weight)] + [m.weight for m in self.modules() if isinstance(m, BiasNorm)]

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalised training images ``(N, C, H, W)``: the eigenvectors of the
        2x2 patch second-moment matrix, each scaled by ``1 / sqrt(eigenvalue + eps)``, and their negatives."""
        k = self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.in_chans * k * k).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        order = eigenvalues.argsort(descending=True)
        filters = (eigenvectors[:, order] / (eigenvalues[order] + eps).sqrt()).T
        filters = filters.reshape(-1, self.in_chans, k, k).to(self.whiten.weight)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
