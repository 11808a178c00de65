"""Exercise 2: the basic residual block of ResNet-18/34 and the CIFAR ResNets."""
import torch
from torch import nn


class MyBasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), with torchvision's names: conv1, bn1, conv2, bn2
    and, where the shape changes, ``downsample`` = 1x1 convolution (with the stride) + batch norm (option B)."""

    def __init__(self, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # TODO 1: conv1: 3x3, in_chs -> planes, with the stride, padding 1, no bias; bn1 over planes
        # TODO 2: conv2: 3x3, planes -> planes, stride 1; bn2
        # TODO 3: self.downsample: None when the shape stays, else nn.Sequential(1x1 conv with stride, batch norm)
        raise NotImplementedError("exercise 2: build MyBasicBlock")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO 4: the residual branch, the shortcut, their sum, and the ReLU after the sum
        raise NotImplementedError("exercise 2: MyBasicBlock.forward")
