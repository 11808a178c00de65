"""The optimisers (SGD; LAMB for large batches; Muon for convolution filters, SGD for the rest) with optional
weight-decay exemptions, and the learning-rate schedule as a function of the step."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.optimizer import ParamsT
from torch.optim.sgd import sgd

from ..errors import ConfigError
from .config import TrainConfig


NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool,
                 head_lr_mult: float = 1.0, norm_lr_mult: float = 1.0) -> list[dict]:
    """Parameter groups, each with an ``lr_mult``: the classifier's is ``head_lr_mult``; with
    ``no_decay_norm_bias``, norm weights and biases (every parameter of dimension < 2) get no weight decay.
    Parameters of normalisation layers get ``norm_lr_mult`` and weight decay divided by it, so that their
    decay per step (lr x weight decay) stays the same (airbench's scaled batch-norm biases).

    Frozen parameters are included: they get no gradient, so SGD leaves them alone until they are unfrozen.
    """
    head = getattr(model, "get_classifier", lambda: None)()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters()}
    groups: dict[tuple[bool, bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        key = (id(p) in head_ids, no_decay_norm_bias and p.ndim <= 1, norm_lr_mult != 1 and id(p) in norm_ids)
        groups.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay / (norm_lr_mult if norm else 1),
             "lr_mult": (head_lr_mult if is_head else 1.0) * (norm_lr_mult if norm else 1.0)}
            for (is_head, no_decay, norm), params in sorted(groups.items())]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2): Adam's bias-corrected
    moments give the direction ``r = m_hat / (sqrt(v_hat) + eps)``, decoupled weight decay is added
    (``u = r + wd * w``), and each parameter tensor steps by ``lr * ||w|| / ||u||`` along ``u`` (the trust
    ratio; 1 where either norm is 0). Parameters without weight decay (biases and norms, with
    ``no_decay_norm_bias``) take the plain Adam step, as timm's ``Lamb`` does for them."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"LAMB needs lr >= 0, eps > 0, weight_decay >= 0 and betas in [0, 1), got lr {lr}, "
                              f"eps {eps}, weight_decay {weight_decay}, betas {tuple(betas)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
                ratio: float | torch.Tensor = 1.0
                if wd:
                    update.add_(p, alpha=wd)
                    w_norm, u_norm = p.norm(), update.norm()
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
                p.sub_(update * (group["lr"] * ratio))
        return loss


NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024: the quintic's coefficients, steepest at zero


def orthogonalize(g: torch.Tensor, steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """About the nearest semi-orthogonal matrix to ``g`` (2-D), ``U V^T`` of its SVD, by ``steps`` Newton-Schulz
    iterations in ``dtype``: its singular values end between about 0.7 and 1.2 rather than at 1, which trains
    as well (Jordan et al. 2024) in a few matrix products."""
    a, b, c = NEWTON_SCHULZ
    x = g.to(dtype)
    x = x / (x.norm() + 1e-7)  # every singular value <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for the groups marked ``orthogonal`` (convolution filters), Nesterov SGD for the
    others, as airbench94_muon trains: a filter bank's Nesterov momentum direction, reshaped to
    ``(out, in x kh x kw)``, is orthogonalised (``orthogonalize``) and applied at the group's lr, after the bank
    is rescaled to the norm ``sqrt(out)`` (so weight decay has nothing to do there; its steps keep a fixed size
    relative to the weights). ``torch.optim.Muon`` takes 2-D parameters only, and neither renormalises."""

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.9, nesterov: bool = True, *,
                 muon_momentum: float = 0.95, ns_steps: int = 5, ns_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0,
                                      orthogonal=False))
        self.muon_momentum, self.ns_steps, self.ns_dtype = muon_momentum, ns_steps, ns_dtype

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["orthogonal"]:
                self._muon_step(params, group["lr"])
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                maximize=False)
            for p, buf in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buf
        return loss

    def _muon_step(self, params: list[torch.Tensor], lr: float) -> None:
        m = self.muon_momentum
        for p in params:
            grad = p.grad
            assert grad is not None  # step passes only the parameters that have one
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buf.mul_(m).add_(grad)
            direction = grad.add(buf, alpha=m)  # Nesterov
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
            p.add_(orthogonalize(direction.reshape(len(p), -1), self.ns_steps, self.ns_dtype).view_as(p), alpha=-lr)


def muon_groups(groups: list[dict], muon_lr_mult: float) -> list[dict]:
    """``groups`` with their convolution filters (4-D parameters) moved to groups of their own, marked
    ``orthogonal``, at ``muon_lr_mult`` times the lr and without weight decay."""
    out = []
    for g in groups:
        filters = [p for p in g["params"] if p.ndim == 4]
        rest = [p for p in g["params"] if p.ndim != 4]
        if rest:
            out.append({**g, "params": rest})
        if filters:
            out.append({**g, "params": filters, "orthogonal": True, "weight_decay": 0.0, "lr_mult": muon_lr_mult})
    return out


def whiten_bias_group(groups: list[dict], model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """``groups`` with the whitening stem's bias moved to a group of its own, as airbench trains it: at the
    batch-norm rate (``norm_lr_mult``, weight decay divided by it), its lr falling linearly from the peak to 0
    over ``cfg.whiten_bias_epochs`` (the group's ``lr_until``), whatever the schedule of the rest."""
    stem = getattr(model, "whiten", None)
    bias = getattr(stem, "bias", None)
    if not isinstance(bias, nn.Parameter):
        raise ConfigError(f"whiten_bias_epochs needs a network with a whitening stem (fastresnet8, fastplain8), "
                          f"not {type(model).__name__}: leave it at 0")
    rest = [{**g, "params": [p for p in g["params"] if p is not bias]} for g in groups]
    return [g for g in rest if g["params"]] + [
        {"params": [bias], "weight_decay": cfg.weight_decay / cfg.norm_lr_mult, "lr_mult": cfg.norm_lr_mult,
         "lr_until": cfg.whiten_bias_epochs}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias, cfg.head_lr_mult, cfg.norm_lr_mult)
    if cfg.whiten_bias_epochs:
        groups = whiten_bias_group(groups, model, cfg)
    if cfg.optimizer == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "muon":
        return Muon(muon_groups(groups, cfg.muon_lr / cfg.lr), lr=cfg.lr, momentum=cfg.momentum,
                    nesterov=cfg.nesterov, muon_momentum=cfg.muon_momentum, ns_steps=cfg.muon_ns_steps,
                    ns_dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def frozen_stages_at(cfg: TrainConfig, epoch: int) -> int | None:
    """How many stages are frozen in ``epoch`` under gradual unfreezing (the deepest frozen stage
    is released every ``unfreeze_every`` epochs; the stem last)."""
    if cfg.freeze_stages is None or cfg.unfreeze_every is None:
        return cfg.freeze_stages
    k = cfg.freeze_stages - int(epoch // cfg.unfreeze_every)
    return k if k >= 0 else None


def lr_factor(cfg: TrainConfig, epoch: float) -> float:
    """The learning rate, as a fraction of ``cfg.lr``, at a (fractional) epoch of training."""
    if epoch < cfg.warmup_epochs:
        if cfg.warmup_constant:
            return cfg.warmup_factor
        return cfg.warmup_factor + (1 - cfg.warmup_factor) * epoch / cfg.warmup_epochs
    progress = min((epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":  # with a linear warm-up: the triangular schedule of fast CIFAR training
        return 1 - (1 - cfg.final_lr_factor) * progress
    if cfg.schedule == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "poly":
        return (1 - progress) ** cfg.poly_power
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float, factor: float = 1.0, epoch: float = 0.0) -> None:
    """Each group's lr at a (fractional) ``epoch``: the peak ``lr`` times its ``lr_mult`` times the schedule's
    ``factor``, or, for a group with an ``lr_until`` (``whiten_bias_group``), its own linear fall to 0."""
    for group in optimizer.param_groups:
        until = group.get("lr_until")
        own = factor if until is None else max(0.0, 1 - epoch / until)
        group["lr"] = lr * group.get("lr_mult", 1.0) * own
