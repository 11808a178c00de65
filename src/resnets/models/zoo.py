"""The named networks. Each entry is data: the ``ResNet`` arguments and where the layout comes from."""
from __future__ import annotations

from typing import Any

from .blocks import BasicBlock, Bottleneck, HighwayBlock, PreActBasicBlock, PreActBottleneck
from .registry import ModelSpec, register_model
from .fast import FastResNet
from .ode import ODENet
from .resnet import ResNet
from .segmentation import segmentation_net

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_B = BasicBlock
_BN = Bottleneck
_L34 = (3, 4, 6, 3)

# name: (ResNet arguments, reference, one-line summary)
IMAGENET: dict[str, tuple[dict[str, Any], str, str]] = {
    "resnet18": (dict(block=_B, layers=(2, 2, 2, 2)), "torchvision", "ResNet-18 (He et al. 2015)"),
    "resnet34": (dict(block=_B, layers=_L34), "torchvision", "ResNet-34 (He et al. 2015)"),
    "resnet50": (dict(block=_BN, layers=_L34), "torchvision", "ResNet-50 v1.5 (stride on the 3x3)"),
    "resnet101": (dict(block=_BN, layers=(3, 4, 23, 3)), "torchvision", "ResNet-101 v1.5"),
    "resnet152": (dict(block=_BN, layers=(3, 8, 36, 3)), "torchvision", "ResNet-152 v1.5"),
    "resnext50_32x4d": (
        dict(block=_BN, layers=_L34, groups=32, base_width=4), "torchvision", "ResNeXt-50 32x4d (Xie et al. 2017)"),
    "resnext101_32x8d": (
        dict(block=_BN, layers=(3, 4, 23, 3), groups=32, base_width=8), "torchvision", "ResNeXt-101 32x8d"),
    "wide_resnet50_2": (
        dict(block=_BN, layers=_L34, base_width=128), "torchvision", "Wide ResNet-50-2 (Zagoruyko & Komodakis)"),
    "wide_resnet101_2": (dict(block=_BN, layers=(3, 4, 23, 3), base_width=128), "torchvision", "Wide ResNet-101-2"),
    "resnet26d": (
        dict(block=_BN, layers=(2, 2, 2, 2), stem="deep", stem_width=32, avg_down=True), "timm",
        "ResNet-26-D: deep stem, average-pool downsampling (He et al. 2019)"),
    "resnet50d": (
        dict(block=_BN, layers=_L34, stem="deep", stem_width=32, avg_down=True), "timm",
        "ResNet-50-D (He et al. 2019)"),
    "seresnet50": (dict(block=_BN, layers=_L34, se_ratio=1 / 16), "timm", "SE-ResNet-50 (Hu et al. 2018)"),
    **{f"resnetrs{depth}": (
        dict(block=_BN, layers=layers, stem="deep", stem_width=32, replace_stem_pool=True, avg_down=True,
             se_ratio=0.25), "timm",
        f"ResNet-RS-{depth} (Bello et al. 2021): ResNet-D with squeeze-and-excitation and a strided-conv stem")
       for depth, layers in ((50, _L34), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3)), (200, (3, 24, 36, 3)),
                             (270, (4, 29, 53, 4)), (350, (4, 36, 72, 4)), (420, (4, 44, 87, 4)))},
    "resnetv2_50": (
        dict(block=PreActBottleneck, layers=_L34), "resnets",
        "Pre-activation ResNet-50 v2 (He et al. 2016), torchvision-style key names"),
}


def _cifar_args(block: type, n: int, **kw: Any) -> dict[str, Any]:
    return dict(block=block, layers=(n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16, num_classes=10, **kw)


CIFAR: dict[str, tuple[dict[str, Any], str, str]] = {}
for _depth in (20, 32, 44, 56, 110, 1202):
    _n = (_depth - 2) // 6
    CIFAR[f"resnet{_depth}"] = (
        _cifar_args(_B, _n, shortcut="A"), "paper", f"CIFAR ResNet-{_depth} (6n+2, n={_n}), option A shortcuts")
    if _depth <= 110:
        CIFAR[f"plain{_depth}"] = (
            _cifar_args(_B, _n, shortcut=None), "paper", f"CIFAR plain-{_depth}: ResNet-{_depth} without shortcuts")
        CIFAR[f"highway{_depth}"] = (
            _cifar_args(HighwayBlock, _n, shortcut="A"), "highway",
            f"CIFAR highway-{_depth}: ResNet-{_depth} with gated shortcuts (Srivastava et al. 2015)")
for _depth in (20, 56, 110):
    CIFAR[f"momentumnet{_depth}"] = (
        _cifar_args(_B, (_depth - 2) // 6, shortcut="A", momentum=0.9), "momentum",
        f"CIFAR Momentum ResNet-{_depth} (Sander et al. 2021): ResNet-{_depth} whose blocks after each stage's first "
        "are momentum steps (gamma 0.9), with a backward pass that recomputes them in reverse")
CIFAR["preact_resnet110"] = (
    _cifar_args(PreActBasicBlock, 18, shortcut="B"), "paper", "Pre-activation ResNet-110 (He et al. 2016)")
for _depth in (164, 1001):
    _n = (_depth - 2) // 9
    CIFAR[f"preact_resnet{_depth}"] = (
        _cifar_args(PreActBottleneck, _n, shortcut="B"), "paper",
        f"Pre-activation bottleneck ResNet-{_depth} (9n+2, n={_n}, He et al. 2016)")
for _depth, _k in ((16, 8), (28, 2), (28, 10), (40, 4)):  # WRN-d-k: (d-4)/6 blocks a stage, widths 16k/32k/64k
    CIFAR[f"wrn{_depth}_{_k}"] = (
        dict(_cifar_args(PreActBasicBlock, (_depth - 4) // 6, shortcut="B"), widths=(16 * _k, 32 * _k, 64 * _k)),
        "paper", f"Wide ResNet-{_depth}-{_k} (Zagoruyko & Komodakis 2016)")

for _name, (_args, _ref, _summary) in IMAGENET.items():
    register_model(ModelSpec(_name, ResNet, _args, _summary, "imagenet", _ref))
for _name, (_args, _ref, _summary) in CIFAR.items():
    register_model(ModelSpec(_name, ResNet, _args, _summary, "cifar", _ref, 32, CIFAR10_MEAN, CIFAR10_STD))

register_model(ModelSpec(
    "fastresnet8", FastResNet, dict(shortcut=True), "Fast CIFAR network: whitened 2x2 stem, 3 stages of conv-pool + "
    "one residual conv, widths 64/256/256 (airbench94 layout with identity shortcuts)", "cifar", "airbench", 32,
    CIFAR10_MEAN, CIFAR10_STD))
register_model(ModelSpec(
    "fastplain8", FastResNet, dict(shortcut=False), "fastresnet8 without shortcuts (airbench94's network)", "cifar",
    "airbench", 32, CIFAR10_MEAN, CIFAR10_STD))
register_model(ModelSpec(
    "odenet20", ODENet, dict(steps=3, tied=True),
    "The ODE view: 3 Euler stages of 3 steps of one shared pre-activation "
    "function each (group norm), evaluable with any number of steps (Chen et al. 2018)", "cifar", "ode", 32,
    CIFAR10_MEAN, CIFAR10_STD))
register_model(ModelSpec(
    "eulernet20", ODENet, dict(steps=3, tied=False), "odenet20 untied: its own function at every step, a "
    "pre-activation ResNet-20 with group norm and steps of 1/3", "cifar", "ode", 32, CIFAR10_MEAN, CIFAR10_STD))

for _backbone in ("resnet18", "resnet34", "resnet50", "resnet101"):
    for _head, _paper in (("deeplabv3", "DeepLabv3 (Chen et al. 2017): atrous spatial pyramid pooling"),
                          ("fcn", "FCN (Long et al. 2015)")):
        _theirs = _backbone in ("resnet50", "resnet101")  # torchvision has these; the others are this project's
        _layout = "torchvision's layout" if _theirs else "BasicBlocks dilated as torchvision dilates Bottlenecks"
        register_model(ModelSpec(
            f"{_head}_{_backbone}", segmentation_net, dict(backbone=_backbone, head=_head), f"{_paper} on a dilated "
            f"{_backbone} (output stride 8), {_layout}; aux_loss=True adds the third stage's FCN head",
            "segmentation", "torchvision" if _theirs else "resnets", 520))
