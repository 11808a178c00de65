"""Loss landscapes (Li, Xu, Taylor, Studer and Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets")
and sharpness, for plain networks against their residual twins.

For each trained network, on a fixed class-balanced subset of its training images:

- **1-D**: the loss along the straight line from the initial weights to the trained ones,
  ``θ(α) = θ0 + α (θ1 - θ0)`` for α from -0.5 to 1.5 (Goodfellow, Vinyals and Saxe 2015).
- **2-D**: the loss on a grid ``θ1 + a δ + b η`` with ``a, b`` in [-1, 1], where ``δ`` and ``η`` are random
  Gaussian directions, *filter-normalised*: each filter of ``δ`` (one output channel of a convolution, one row
  of a linear layer) is rescaled to the norm of the same filter in ``θ1``, so that the plot does not depend on
  the weights' scale, which batch norm leaves free.
- **Sharpness**: the Hessian's eigenvalue of largest magnitude at ``θ1`` (the top one at a minimum), by power
  iteration on Hessian-vector products (``torch.func``: forward-mode over reverse-mode differentiation).

Batch norm: its γ and β, and every bias (all one-dimensional parameters), get no component in the random
directions (Li et al.'s "ignore biases and BN"). Every point is evaluated with the statistics of the fixed
evaluation batch, that is with the running statistics recomputed for the weights at that point: the trained
running statistics belong to ``θ1`` only, and nothing on the interpolation path has any. (Li et al.'s code keeps
the trained running statistics instead.)
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, replace_all_batch_norm_modules_

from ..errors import ConfigError

Params = dict[str, torch.Tensor]
log = logging.getLogger("resnets")


def filter_normalized(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``direction`` with each filter (slice along the first dimension) scaled to the norm of the same filter
    of ``weight``; zero for one-dimensional tensors (biases, batch norm's γ and β)."""
    if weight.dim() <= 1:
        return torch.zeros_like(weight)
    d, w = direction.flatten(1), weight.flatten(1)
    scale = w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (d * scale).view_as(weight)


def random_direction(params: Params, seed: int) -> Params:
    """A filter-normalised Gaussian direction for ``params``, the same for any network of the same shapes and
    ``seed`` (so a plain network and its residual twin are cut along the same directions)."""
    g = torch.Generator().manual_seed(seed)
    return {k: filter_normalized(torch.randn(v.shape, generator=g, dtype=v.dtype), v) for k, v in params.items()}


def moved(base: Params, directions: Sequence[Params], steps: Sequence[float]) -> Params:
    """``base + Σ steps[i] · directions[i]``."""
    return {k: base[k] + sum(s * d[k] for s, d in zip(steps, directions)) for k in base}


def dot(a: Params, b: Params) -> torch.Tensor:
    return sum(((a[k] * b[k]).sum() for k in a), torch.zeros(()))


class Landscape:
    """A network made a function of its weights: the loss and accuracy at any weights on fixed images."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        self.model = copy.deepcopy(model).eval()  # eval: no dropout; batch norm still uses the batch (below)
        replace_all_batch_norm_modules_(self.model)  # no running statistics: normalise by the batch at hand
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        self.images = images.contiguous(memory_format=torch.channels_last)
        self.labels = labels
        self.params: Params = {k: p.detach() for k, p in self.model.named_parameters()}

    def loss(self, params: Params) -> torch.Tensor:
        return F.cross_entropy(functional_call(self.model, params, (self.images,)), self.labels)

    @torch.no_grad()
    def evaluate(self, params: Params) -> tuple[float, float]:
        """Mean cross-entropy and top-1 accuracy (%) at ``params``."""
        logits = functional_call(self.model, params, (self.images,))
        accuracy = (logits.argmax(1) == self.labels).float().mean().item() * 100
        return F.cross_entropy(logits, self.labels).item(), accuracy


def interpolation(land: Landscape, start: Params, end: Params, alphas: Sequence[float]) -> dict[str, list[float]]:
    """Loss and accuracy along ``start + α (end - start)``."""
    delta = {k: end[k] - start[k] for k in end}
    points = [land.evaluate(moved(start, [delta], [a])) for a in alphas]
    return {"alpha": list(alphas), "loss": [p[0] for p in points], "accuracy": [p[1] for p in points]}


def surface(land: Landscape, center: Params, directions: tuple[Params, Params], coords: Sequence[float]
            ) -> dict[str, list]:
    """Loss and accuracy on the grid ``center + a δ + b η``; rows follow ``b``, columns ``a``."""
    grid = [[land.evaluate(moved(center, directions, (a, b))) for a in coords] for b in coords]
    return {"coords": list(coords), "loss": [[p[0] for p in row] for row in grid],
            "accuracy": [[p[1] for p in row] for row in grid]}


def _power_iteration(hvp: Callable[[Params], Params], v: Params, iterations: int, tol: float,
                     shift: float = 0.0) -> tuple[float, int]:
    """The eigenvalue of largest magnitude of ``H - shift·I`` and the number of products taken."""
    eigenvalue, done = 0.0, 0
    for done in range(1, iterations + 1):  # noqa: B007 (the count is returned after the loop)
        norm = math.sqrt(float(dot(v, v)))
        v = {k: t / norm for k, t in v.items()}
        hv = {k: t - shift * v[k] for k, t in hvp(v).items()}
        estimate = float(dot(v, hv))  # the Rayleigh quotient vᵀ(H - shift·I)v of the unit vector v
        converged = abs(estimate - eigenvalue) <= tol * abs(estimate)
        eigenvalue, v = estimate, hv
        if converged:
            break
    return eigenvalue, done


def top_eigenvalue(loss: Callable[[Params], torch.Tensor], params: Params, iterations: int = 20,
                   tol: float = 1e-3, seed: int = 0) -> tuple[float, int]:
    """The largest Hessian eigenvalue of ``loss`` at ``params`` by power iteration, and the number of
    Hessian-vector products it took (each run stops when its estimate changes by less than ``tol``, relatively).
    Power iteration finds the eigenvalue of largest magnitude; where that one is negative (not at a minimum), a
    second run on ``H - λ·I`` finds the top of the spectrum."""
    gradient = grad(loss)

    def hvp(v: Params) -> Params:
        return jvp(gradient, (params,), (v,))[1]

    g = torch.Generator().manual_seed(seed)
    start = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}
    largest, done = _power_iteration(hvp, start, iterations, tol)
    if largest >= 0:
        return largest, done
    above, more = _power_iteration(hvp, start, iterations, tol, shift=largest)
    return above + largest, done + more


def network_landscape(start: Params, trained: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                      points: int = 21, seed: int = 0, hessian_iterations: int = 20) -> dict:
    """Every measurement of one network: the 1-D interpolation from the weights ``start`` to ``trained``, the 2-D
    surface around ``trained`` (``points`` × ``points``, directions drawn with ``seed``) and its sharpness."""
    land = Landscape(trained, images, labels)
    start = {k: start[k].to(v.dtype) for k, v in land.params.items()}
    directions = (random_direction(land.params, seed), random_direction(land.params, seed + 1))
    eigenvalue, products = top_eigenvalue(land.loss, land.params, hessian_iterations, tol=1e-2, seed=seed)
    loss, accuracy = land.evaluate(land.params)
    return {"loss": loss, "accuracy": accuracy, "top_hessian_eigenvalue": eigenvalue, "hessian_products": products,
            "interpolation": interpolation(land, start, land.params, [round(-0.5 + 0.1 * i, 2) for i in range(21)]),
            "surface": surface(land, land.params, directions, [round(-1 + 2 * i / (points - 1), 4)
                                                               for i in range(points)])}


def run_landscape(out: str | Path, *, quick: bool = False, data: str = "cifar10", data_root: str | None = None,
                  depths: tuple[int, ...] | None = None, epochs: float | None = None, subset: int | None = None,
                  images: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """``resnets experiment landscape``: train plain and residual twins (``depths``; 20 and 56, or 20 with
    ``quick``), then write ``landscape.json``, ``landscape.png`` (2-D contours) and ``interpolation.png``."""
    from ..engine.checkpoint import load_training_checkpoint
    from ..engine.evaluate import load_checkpoint_and_data
    from ..files import atomic_write
    from ..data import take
    from ..data.sources import labelled_images
    from .experiments import run_experiment

    if quick:  # about 4 minutes on 2 CPU cores
        subset, epochs, images = subset or 5000, epochs or 3, images or 256
    depths, images, out = depths or ((20,) if quick else (20, 56)), images or 512, Path(out)
    trained = run_experiment("degradation", out / "training", data=data, data_root=data_root, epochs=epochs,
                             subset=subset, depths=depths, seed=seed, progress=progress, save_init=True)
    networks = []
    for run in trained["runs"]:
        folder = out / "training" / run["folder"]
        if not (folder / "init.pt").is_file():
            raise ConfigError(f"{folder} has no init.pt (the starting weights): delete the folder to train it again")
        loaded = load_checkpoint_and_data(folder / "best.pt")
        init = load_training_checkpoint(folder / "init.pt")["model"]
        x, y = labelled_images(take(loaded.dataset.train, images, seed=1), images)
        log.info("landscape of %s on %d training images", run["label"], len(y))
        networks.append({"label": run["label"], "model": run["model"], "model_args": run["model_args"],
                         "val_error": run["val_error"], "test_error": run["test_error"],
                         **network_landscape(init, loaded.model, loaded.aug.eval(x), y, seed=seed)})
    report: dict[str, Any] = {
        "experiment": "landscape", "data": data, "epochs": epochs, "subset": subset, "images": images,
        "seed": seed, "directions": "filter-normalised Gaussian; biases and batch norm's γ, β left out",
        "batch_norm": "statistics of the evaluation batch at every point (recomputed, not the trained ones)",
        "networks": networks}
    atomic_write(out / "landscape.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    report["figures"] = [str(p) for p in plot_landscapes(networks, out)]
    return report


def plot_landscapes(networks: list[dict], out: Path) -> list[Path]:
    """``landscape.png``: the 2-D loss contours of every network on one logarithmic colour scale, a row per
    depth; ``interpolation.png``: the loss from the initial to the trained weights."""
    import numpy as np
    from matplotlib.colors import LogNorm

    from ..plots import plt, save_figure

    losses = np.array([n["surface"]["loss"] for n in networks])
    low, high = max(float(losses.min()), 1e-3), float(min(losses.max(), 100 * losses.min(), 50.0))
    levels = np.geomspace(low, max(high, low * 1.01), 30)
    columns = len({n["label"].split("-")[0] for n in networks})
    rows = math.ceil(len(networks) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 1, 4.0 * rows), squeeze=False,
                             layout="constrained")
    for ax, n in zip(axes.flat, sorted(networks, key=lambda n: (int(n["label"].split("-")[-1]),
                                                                not n["label"].startswith("plain")))):
        c = n["surface"]["coords"]
        filled = ax.contourf(c, c, np.clip(n["surface"]["loss"], low, levels[-1]), levels, norm=LogNorm(),
                             cmap="viridis")
        ax.contour(c, c, np.clip(n["surface"]["loss"], low, levels[-1]), levels[::3], colors="white", linewidths=0.5)
        ax.plot(0, 0, "r*", ms=9)
        ax.set(title=f"{n['label']}: top Hessian eigenvalue {n['top_hessian_eigenvalue']:.3g}", xlabel="δ",
               ylabel="η", aspect="equal")
    bar = fig.colorbar(filled, ax=axes, label="training loss (cross-entropy)", shrink=0.85)
    bar.set_ticks(levels[::4].tolist(), labels=[f"{v:.3g}" for v in levels[::4]])
    written = [save_figure(fig, out / "landscape.png", tight=False)]

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for n in networks:
        ax.plot(n["interpolation"]["alpha"], n["interpolation"]["loss"], "o-", ms=3, label=n["label"])
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8)
    ax.set(xlabel="α  (0: initial weights, 1: trained weights)", ylabel="training loss", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out / "interpolation.png"))
    return written
