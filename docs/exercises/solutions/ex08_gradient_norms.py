"""Exercise 8: how the gradient reaches each layer: plain against residual networks."""
import torch
import torch.nn.functional as F
from torch import nn


def conv_grad_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The L2 norm of the cross-entropy loss's gradient for the weight of every convolution of ``model`` (in the
    order ``model.modules()`` gives them), after one forward and backward pass in training mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, nn.Conv2d)]
