"""What the benchmark scripts share: where results go and how they are written."""
from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR10_LOSSLESS = SHARED_DATA / "cifar-10-lossless-python.tar.xz"  # the original pixels
CAMPAIGN_STATE = Path(__file__).resolve().parent / "campaign" / "state"


def campaign_paused(state: Path = CAMPAIGN_STATE) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Benchmarks need a quiet machine: the running training campaign is stopped while the block times, and
    continued after. Yields what to record in the result's JSON."""
    from resnets.engine.campaign import campaign_paused as paused

    return paused(state)


def write_result(name: str, record: dict[str, Any], out: str | Path = RESULTS, echo: bool = True) -> Path:
    """Write ``record`` as ``<out>/<name>.json`` (indented, atomically: an interrupted write leaves the earlier
    file) and, with ``echo``, print it."""
    from resnets.files import atomic_write

    path = Path(out) / f"{name}.json"
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    if echo:
        print(text, end="")
    return path


class Layer(NamedTuple):
    """A convolution or linear layer at one input shape in a forward pass."""
    count: int  # how often it ran at that shape
    flops: int  # floating-point operations of one run for the whole batch (2 per multiply-accumulate)
    input_grad: bool  # whether training needs the gradient of its input (not for the images)
    weight_grad: bool  # whether its weights train


def layer_shapes(net: nn.Module, x: torch.Tensor, grad: bool = False) -> dict[tuple[nn.Module, tuple[int, ...]], Layer]:
    """Each convolution and linear layer of one forward pass of ``net`` with its input shape (with ``grad``, the
    pass records which gradients a training step needs)."""
    from resnets.models.profile import layer_macs

    seen: Counter = Counter()
    found: dict = {}

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        key = (m, tuple(args[0].shape))
        seen[key] += 1
        found[key] = (2 * layer_macs(m, out) * out.shape[0], args[0].requires_grad, m.weight.requires_grad and grad)

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.set_grad_enabled(grad):
        net(x)
    for h in hooks:
        h.remove()
    return {k: Layer(n, *found[k]) for k, n in seen.items()}
