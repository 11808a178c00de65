"""Momentum ResNets (Sander, Ablin, Blondel and Peyré 2021): each residual step takes a velocity,

    v <- gamma * v + (1 - gamma) * F(x),    x <- x + v        (v starts at 0 in each stage)

second-order dynamics that can be run backwards, x = x' - v', v = (v' - (1 - gamma) F(x)) / gamma, so the backward
pass recomputes each step's input instead of storing it: the activations kept for training no longer grow
with depth. The first block of each stage changes the width or the resolution and stays a residual block,
as in the authors' code.

Run backwards in floating point, a step divides the rounding error of v by gamma and passes the error of x
through F's Jacobian: the error grows geometrically with the steps reversed. Measured against ordinary
backpropagation in float32 (the whole gradient, relative): 3.5e-5 over the 17 steps of a ResNet-110 stage,
but 0.42 over a stage of 200 steps (ResNet-1202's): nothing of the gradient is left. The authors keep v exact
in fixed point (with an information buffer for the multiplication by gamma). Here the forward pass keeps the
state (x, v) every ``ANCHOR_EVERY`` steps and the backward pass reverses at most that many steps from a kept
state: about 1e-6 for both stages above, float32 noise (``tests/models/test_momentum.py`` checks it; with a
state kept every 16 steps, one 200-step stage of three measured still lost 1.7e-3). Keeping the state in
float64 instead was tried and does not do it: F's Jacobian amplifies the error of x too, and the float64
state changes the forward pass's float32 rounding. Memory then grows with depth by two tensors per
``ANCHOR_EVERY`` steps, against the several per block that backpropagation keeps. The state is kept in
float32 at least, under bfloat16 autocast too.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

ANCHOR_EVERY = 8  # momentum steps between the states the forward pass keeps (the error grows within them)


def residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``F(x)`` of a residual block: its branch (with squeeze-and-excitation), without shortcut or ReLU."""
    out = block.branch(x)  # type: ignore[operator]
    return out if block.se is None else block.se(out)  # type: ignore[operator]


class MomentumStage(nn.Sequential):
    """A stage of residual blocks whose blocks after the first are momentum steps with ``gamma``. The blocks
    keep their names (``layer1.1.conv1`` ...), so a ResNet's weights load unchanged. ``invertible``: the backward
    pass recomputes the steps in reverse instead of storing their activations."""

    def __init__(self, *blocks: nn.Module, gamma: float = 0.9, invertible: bool = True) -> None:
        super().__init__(*blocks)
        if not 0 < gamma < 1:
            raise ConfigError(f"momentum gamma must be in (0, 1), got {gamma}")
        for blk in blocks[1:]:
            if getattr(blk, "downsample", None) is None or not hasattr(blk, "branch"):
                raise ConfigError("momentum steps need post-activation residual blocks with identity shortcuts")
            if not isinstance(getattr(blk, "drop_path", None), nn.Identity):
                raise ConfigError("momentum steps cannot run backwards through stochastic depth: drop_path_rate=0")
        self.gamma, self.invertible = gamma, invertible

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        steps = list(self)[1:]
        params = [p for blk in steps for p in blk.parameters() if p.requires_grad]
        if self.invertible and torch.is_grad_enabled() and (x.requires_grad or params):
            return _Reversible.apply(self.gamma, steps, len(params), x, *params)
        v = torch.zeros_like(x)
        for blk in steps:
            v = self.gamma * v + (1 - self.gamma) * residual(blk, x)
            x = x + v
        return x


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _Reversible(torch.autograd.Function):
    """The momentum steps of a stage with a backward pass that runs them in reverse from the output state and
    the states kept every ``ANCHOR_EVERY`` steps, F recomputed under the caller's autocast."""

    @staticmethod
    def forward(ctx: Any, gamma: float, steps: list[nn.Module], n_params: int, x: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        ctx.gamma, ctx.steps, ctx.dtype = gamma, steps, x.dtype
        ctx.autocast = _autocast_state(x.device.type)
        # the state in float32 at least (under bfloat16 autocast too): reversing steps in 8 bits of mantissa would
        # lose the gradient within an anchor's span
        state = x.detach().to(torch.promote_types(x.dtype, torch.float32))
        v = torch.zeros_like(state)
        anchors = []
        with torch.no_grad():
            for i, blk in enumerate(steps):
                if i % ANCHOR_EVERY == 0 and i > 0:
                    anchors += [state, v]
                v = gamma * v + (1 - gamma) * residual(blk, state.to(ctx.dtype)).to(v.dtype)
                state = state + v
        ctx.save_for_backward(state, v, *anchors)
        return state.to(ctx.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from .resnet import running_stats_untouched  # (resnet.py builds momentum stages)

        gamma, steps = ctx.gamma, ctx.steps
        x, v, *saved = ctx.saved_tensors
        anchors = {ANCHOR_EVERY * (k + 1): (saved[2 * k], saved[2 * k + 1]) for k in range(len(saved) // 2)}
        gx, gv = grad.to(v.dtype), torch.zeros_like(v)
        param_grads: list[torch.Tensor | None] = []
        device_type, enabled, dtype = ctx.autocast
        with running_stats_untouched(*steps), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            for i in reversed(range(len(steps))):
                blk = steps[i]
                x = x - v  # this step's input (or, at an anchor, as the forward pass kept it)
                x = anchors[i][0] if i in anchors else x
                inp = x.to(ctx.dtype).detach().requires_grad_(True)
                params = [p for p in blk.parameters() if p.requires_grad]
                with torch.enable_grad():
                    f = residual(blk, inp)
                v = anchors[i][1] if i in anchors else (v - (1 - gamma) * f.detach().to(v.dtype)) / gamma
                a = gv + gx  # the gradient reaching this step's new v (directly, and through x' = x + v')
                grads = torch.autograd.grad(f, [inp, *params], ((1 - gamma) * a).to(f.dtype), allow_unused=True)
                gx, gv = gx + grads[0].to(gx.dtype), gamma * a
                param_grads = [*grads[1:], *param_grads]
        return (None, None, None, gx.to(ctx.dtype), *param_grads)

