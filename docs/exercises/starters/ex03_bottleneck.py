"""Exercise 3: the bottleneck block of ResNet-50/101/152 (v1.5: the stride on the 3x3 convolution)."""
import torch
from torch import nn


class MyBottleneck(nn.Module):
    """1x1 reduce to ``planes``, 3x3 (with the stride), 1x1 expand to ``4 * planes``, each followed by batch norm;
    ReLU after the first two and after the sum. Names as torchvision's: conv1..3, bn1..3, ``downsample``."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # TODO 1: conv1 (1x1, in_chs -> planes), conv2 (3x3, stride, padding 1), conv3 (1x1, planes -> 4 * planes),
        #         all without bias, each with its batch norm bn1, bn2, bn3
        # TODO 2: downsample: a 1x1 projection with the stride + batch norm where the shape changes, else None
        raise NotImplementedError("exercise 3: build MyBottleneck")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO 3: reduce, 3x3, expand; add the shortcut; ReLU
        raise NotImplementedError("exercise 3: MyBottleneck.forward")
