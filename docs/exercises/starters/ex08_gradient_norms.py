"""Exercise 8: how the gradient reaches each layer: plain against residual networks."""
import torch
import torch.nn.functional as F  # noqa: F401
from torch import nn


def conv_grad_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The L2 norm of the cross-entropy loss's gradient for the weight of every convolution of ``model`` (in the
    order ``model.modules()`` gives them), after one forward and backward pass in training mode."""
    # TODO 1: training mode, gradients cleared
    # TODO 2: forward, cross-entropy loss, backward
    # TODO 3: the gradient norm of each nn.Conv2d's weight, in module order
    raise NotImplementedError("exercise 8: write conv_grad_norms")
