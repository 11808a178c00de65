"""Semantic segmentation on a dilated ResNet, torchvision's layouts: FCN (Long et al. 2015) and DeepLabv3 (Chen et
al. 2017, atrous spatial pyramid pooling), each with an optional auxiliary FCN head on the third stage. The
output is ``{"out": logits}`` (and ``"aux"``) at the input's size; the state-dict keys are torchvision's
(``backbone.*``, ``classifier.*``, ``aux_classifier.*``), so its weights load unchanged.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .resnet import ResNet

Head = Literal["deeplabv3", "fcn"]
ASPP_RATES = (12, 24, 36)  # at output stride 8, as torchvision's DeepLabHead; halved at output stride 16


def _conv_bn_relu(in_chs: int, out_chs: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(in_chs, out_chs, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(out_chs),
            nn.ReLU()]


class FCNHead(nn.Sequential):
    """3x3 conv to a quarter of the channels, BN, ReLU, dropout 0.1, 1x1 conv to the classes."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        inter = in_chs // 4
        super().__init__(*_conv_bn_relu(in_chs, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class ASPPPooling(nn.Sequential):
    """Image-level features: global average, 1x1 conv, BN, ReLU, spread back over the map."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_chs, out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3 branches and image pooling, concatenated
    and projected to ``out_chs`` (dropout 0.5)."""

    def __init__(self, in_chs: int, rates: tuple[int, ...] = ASPP_RATES, out_chs: int = 256) -> None:
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(in_chs, out_chs))]
        branches += [nn.Sequential(*_conv_bn_relu(in_chs, out_chs, 3, r)) for r in rates]
        self.convs = nn.ModuleList([*branches, ASPPPooling(in_chs, out_chs)])
        self.project = nn.Sequential(*_conv_bn_relu(len(self.convs) * out_chs, out_chs), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    def __init__(self, in_chs: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__(ASPP(in_chs, rates), *_conv_bn_relu(256, 256, 3), nn.Conv2d(256, num_classes, 1))


class SegmentationNet(nn.Module):
    """A dilated ResNet backbone (its classifier removed), a head on its last stage and, with ``aux_loss``, an
    FCN head on its third stage (for an auxiliary loss in training). ``rates``: the ASPP's dilations."""

    def __init__(self, backbone: ResNet, head: Head, num_classes: int, aux_loss: bool,
                 rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"a segmentation network needs num_classes >= 1, got {num_classes}")
        if head not in ("deeplabv3", "fcn"):
            raise ConfigError(f"unknown segmentation head {head!r}: expected 'deeplabv3' or 'fcn'")
        backbone.reset_classifier(0)
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        self.classifier = DeepLabHead(channels[4], num_classes, rates) if head == "deeplabv3" else \
            FCNHead(channels[4], num_classes)
        self.aux_classifier = FCNHead(channels[3], num_classes) if aux_loss else None
        self.num_classes = num_classes

    @property
    def head_keys(self) -> tuple[str, ...]:
        """The parameters that depend on the class count (each head's last convolution): what fine-tuning on
        other classes starts afresh."""
        heads = ("classifier", "aux_classifier") if self.aux_classifier is not None else ("classifier",)
        return tuple(f"{h}.{len(getattr(self, h)) - 1}.{p}" for h in heads for p in ("weight", "bias"))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        aux_in, last = self.backbone.forward_intermediates(x, (3, 4))
        out = {"out": F.interpolate(self.classifier(last), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            out["aux"] = F.interpolate(self.aux_classifier(aux_in), size=size, mode="bilinear", align_corners=False)
        return out


def segmentation_net(backbone: str = "resnet50", head: Head = "deeplabv3", num_classes: int = 21, in_chans: int = 3,
                     aux_loss: bool = False, pretrained_backbone: str | bool | None = None,
                     output_stride: int = 8) -> SegmentationNet:
    """torchvision's ``deeplabv3_resnet50`` / ``fcn_resnet50`` (and 101): the backbone dilated to output stride 8
    (``replace_stride_with_dilation=[False, True, True]``), the head, and the auxiliary head with ``aux_loss``.
    ``pretrained_backbone``: ImageNet weights for the backbone (``True``: its default tag). ``output_stride=16``
    dilates the last stage only (a quarter of the last stages' cost; the DeepLabv3 paper's training setting,
    with the ASPP's rates halved to 6, 12, 18)."""
    from .registry import create_model

    if output_stride not in (8, 16):
        raise ConfigError(f"a segmentation network's output_stride must be 8 or 16, got {output_stride}")
    net = create_model(backbone, in_chans=in_chans, output_stride=output_stride, pretrained=pretrained_backbone)
    if not isinstance(net, ResNet):
        raise ConfigError(f"{backbone} is not a ResNet: segmentation networks take an ImageNet ResNet")
    rates = tuple(r * 8 // output_stride for r in ASPP_RATES)
    return SegmentationNet(net, head, num_classes, aux_loss, rates)
