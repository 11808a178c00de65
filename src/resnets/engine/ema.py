"""Averages of the weights, batch-norm statistics included: an exponential moving average (Polyak averaging)
that is evaluated in place of the model, and lookahead, whose average the model itself restarts from."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * model`` after every step; integer buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.lerp_(m.detach(), 1 - self.decay)
            else:
                e.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


class Lookahead:
    """airbench's lookahead (Jordan 2024, after Zhang et al. 2019): every ``every`` steps the slow weights move
    towards the model's, ``slow = d * slow + (1 - d) * weights``, and the model restarts from them. The decay
    ``d = decay * (step / total_steps) ** 3`` is 0 early on (no effect) and ``decay`` at the end; after the
    last step the model takes the slow weights."""

    def __init__(self, model: nn.Module, every: int, decay: float) -> None:
        self.every, self.decay = every, decay
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Call after optimiser step ``step`` (counted from 1) of ``total_steps``."""
        if step % self.every and step != total_steps:
            return
        d = 1.0 if step >= total_steps else self.decay * (step / total_steps) ** 3
        weights = model.state_dict()
        for k, slow in self.slow.items():
            slow.lerp_(weights[k], 1 - d)
            weights[k].copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.slow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.slow[k].copy_(v)
