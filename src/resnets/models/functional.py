"""ResNet written out by hand, for learning: ``F.conv2d`` and a batch norm you can read.

It runs the basic-block networks (ResNet-18/34 and the CIFAR ResNets with option A or B shortcuts)
straight from a state dict with the module version's key names, and gives the same outputs, gradients
and running statistics:

    model = create_model("resnet20")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits = resnet_forward(state, images, training=True)   # updates state's running statistics
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]


def batch_norm(x: torch.Tensor, state: State, prefix: str, training: bool,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel by its batch statistics (training) or the running ones (eval), then scale and shift.

    In training, the running mean and the unbiased running variance move towards the batch's by ``momentum``.
    """
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        n = x.numel() / x.shape[1]
        with torch.no_grad():
            state[f"{prefix}.running_mean"].mul_(1 - momentum).add_(momentum * mean)
            state[f"{prefix}.running_var"].mul_(1 - momentum).add_(momentum * var * n / (n - 1))
            state[f"{prefix}.num_batches_tracked"].add_(1)
    else:
        mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]

    def per_channel(t: torch.Tensor) -> torch.Tensor:
        return t[None, :, None, None]

    x_hat = (x - per_channel(mean)) / torch.sqrt(per_channel(var) + eps)
    return x_hat * per_channel(state[f"{prefix}.weight"]) + per_channel(state[f"{prefix}.bias"])


def conv_bn(x: torch.Tensor, state: State, conv: str, bn: str, stride: int, training: bool) -> torch.Tensor:
    weight = state[f"{conv}.weight"]
    x = F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)
    return batch_norm(x, state, bn, training)


def basic_block(x: torch.Tensor, state: State, prefix: str, stride: int, training: bool) -> torch.Tensor:
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
    out = F.relu(conv_bn(x, state, f"{prefix}.conv1", f"{prefix}.bn1", stride, training))
    out = conv_bn(out, state, f"{prefix}.conv2", f"{prefix}.bn2", 1, training)
    if f"{prefix}.downsample.0.weight" in state:  # option B: 1x1 projection + norm
        shortcut = conv_bn(x, state, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, training)
    else:  # option A: identity, or subsample and pad the new channels with zeros
        shortcut = x[:, :, ::stride, ::stride]
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - x.shape[1]))
    return F.relu(out + shortcut)


def resnet_forward(state: State, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """Logits of a basic-block ResNet whose weights are ``state`` (module key names)."""
    imagenet_stem = state["conv1.weight"].shape[-1] == 7
    x = F.relu(conv_bn(x, state, "conv1", "bn1", 2 if imagenet_stem else 1, training))
    if imagenet_stem:
        x = F.max_pool2d(x, 3, stride=2, padding=1)
    stage = 1
    while f"layer{stage}.0.conv1.weight" in state:
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in state:
            stride = 2 if stage > 1 and block == 0 else 1
            x = basic_block(x, state, f"layer{stage}.{block}", stride, training)
            block += 1
        stage += 1
    x = x.mean(dim=(2, 3))
    return F.linear(x, state["fc.weight"], state["fc.bias"])
