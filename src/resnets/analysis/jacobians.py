"""The top singular values and vectors of a block's Jacobian at an input, without forming the Jacobian: a
randomized subspace iteration (Halko, Martinsson and Tropp 2011) that only multiplies by J (``torch.func.jvp``)
and by J^T (``torch.func.vjp``). A conv block of ResNet-20 maps 16,384 numbers to 16,384: its Jacobian would take
a gigabyte; k singular triplets take a few times k products."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jvp, vjp, vmap


@dataclass
class SVD:
    """The top ``k`` singular triplets: ``u`` (k, m) left vectors, ``s`` (k,) values, ``v`` (k, n) right vectors."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor


def top_singular(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, k: int, iters: int = 6,
                 oversample: int = 4, generator: torch.Generator | None = None) -> SVD:
    """The top ``k`` singular triplets of the Jacobian of ``f`` (one input ``x`` of any shape to one output) at
    ``x``, by ``iters`` rounds of subspace iteration on J^T J with ``k + oversample`` vectors. Vectors are
    flattened (``u`` in the output's space, ``v`` in the input's)."""
    n = x.numel()
    width = min(n, k + oversample)
    pull = vjp(f, x)[1]

    def forward(t: torch.Tensor) -> torch.Tensor:
        return jvp(f, (x,), (t.view_as(x),))[1].reshape(-1)

    def backward(w: torch.Tensor) -> torch.Tensor:
        return pull(w.view(out_shape))[0].reshape(-1)

    out_shape = f(x).shape
    q = torch.randn(width, n, dtype=x.dtype, generator=generator).to(x.device)
    q = torch.linalg.qr(q.T).Q.T
    for _ in range(iters):
        q = torch.linalg.qr(vmap(backward)(vmap(forward)(q)).T).Q.T  # the rows span J^T J's top subspace
    jq = vmap(forward)(q)  # (width, m): J applied to the basis
    u, s, wt = torch.linalg.svd(jq.T, full_matrices=False)  # J Q^T = U S W^T, so J ~ U S (Q^T W)^T
    v = wt @ q
    return SVD(u.T[:k].detach(), s[:k].detach(), v[:k].detach())


def effective_rank(s: torch.Tensor) -> float:
    """exp(entropy) of the singular values normalised to sum 1 (Roy and Vetterli 2007): k for k equal values."""
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def line_fit(points: torch.Tensor) -> tuple[float, float]:
    """How well a trajectory (``points``: (L + 1, n)) lies on a line, and how even its steps are: the share of its
    variance along its first principal direction (1: a line), and the coefficient of variation of its step
    lengths (0: equispaced)."""
    centred = points - points.mean(0)
    s = torch.linalg.svdvals(centred)
    steps = (points[1:] - points[:-1]).norm(dim=1)
    return float(s[0] ** 2 / (s ** 2).sum()), float(steps.std() / steps.mean()) if len(steps) > 1 else 0.0


def alignment_matrix(us: list[torch.Tensor | None], vs: list[torch.Tensor | None]) -> torch.Tensor:
    """|<u_l, v_m>| for every pair of blocks (the top left singular vector of block l, the top right one of block
    m); NaN where the two live in spaces of different sizes (a block that changes the shape)."""
    n = len(us)
    a = torch.full((n, n), float("nan"))
    for i, u in enumerate(us):
        for j, v in enumerate(vs):
            if u is not None and v is not None and u.numel() == v.numel():
                a[i, j] = (u.flatten() @ v.flatten()).abs()
    return a
