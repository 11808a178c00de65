"""Residual Alignment (Li and Papyan 2023), measured: in a trained residual network,

- RA1: each input's representations x_0 ... x_L lie on a line, equispaced;
- RA2: the top left and right singular vectors of the residual branches' Jacobians align, within a block and
  across blocks;
- RA3: in fully-connected ResNets those Jacobians have rank at most C (the number of classes);
- RA4: their top singular values shrink as the depth grows (about as 1 / L).

None of it appears in plain networks, nor at initialisation. ``run_alignment`` trains fully-connected ResNets of
several depths and their plain twins on the handwritten digits (seconds each), and the paper's CIFAR ResNet-20
beside plain-20 (or takes a checkpoint), and measures each property on test inputs: Jacobians by randomized
subspace iteration (``jacobians.py``), never formed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..files import atomic_write
from ..models import BasicBlock, Bottleneck
from ..models.resnet import StagedNet
from .jacobians import alignment_matrix, effective_rank, line_fit, top_singular
from .lesion import blocks_of
from .stats import summarize

CLASSES = 10


@dataclass(frozen=True)
class Scale:
    """How large the study is: the fully-connected networks' depths, width and epochs, how many test inputs and
    singular vectors each measure takes, and the same two for the conv networks."""

    depths: tuple[int, ...]
    width: int
    epochs: int
    inputs: int
    k: int
    conv_inputs: int
    conv_k: int


QUICK = Scale(depths=(4, 8, 16), width=32, epochs=60, inputs=16, k=20, conv_inputs=4, conv_k=12)
FULL = Scale(depths=(8, 16, 32), width=64, epochs=200, inputs=64, k=30, conv_inputs=16, conv_k=20)


class FCResNet(nn.Module):
    """A fully-connected network: an embedding, ``blocks`` blocks ``x + W2 relu(W1 x)`` (``residual``) or
    ``W2 relu(W1 x)`` (the plain twin), and a linear classifier. The branches start small (their output layer
    scaled by 1/sqrt(blocks)), so that deep residual stacks train without normalisation."""

    def __init__(self, inputs: int, width: int, blocks: int, classes: int = CLASSES, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.embed = nn.Linear(inputs, width)
        branches = [nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(blocks)]
        self.branches = nn.ModuleList(branches)
        if residual:
            with torch.no_grad():
                for b in branches:
                    last = b[-1]
                    assert isinstance(last, nn.Linear)
                    last.weight.mul_(1 / math.sqrt(blocks))
        self.head = nn.Linear(width, classes)

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``i`` as a map of the stream: x + F(x), or F(x) for the plain twin."""
        return x + self.branches[i](x) if self.residual else self.branches[i](x)

    def trajectory(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The representations x_0 (the embedding) ... x_L (after the last block)."""
        xs = [self.embed(x)]
        for i in range(len(self.branches)):
            xs.append(self.block(i, xs[-1]))
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trajectory(x)[-1])


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as standardised 64-vectors: training and test inputs and labels (80/20, seeded)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(bunch.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train_fc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """Adam, batch 64, cosine, weight decay 1e-4: enough for the digits' training error to reach 0."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def measure(trajectories: list[list[torch.Tensor]], branch: Callable[[int, torch.Tensor], torch.Tensor], k: int,
            seed: int = 0) -> dict[str, Any]:
    """Every property on the given inputs: ``trajectories`` (per input, the stream x_0 ... x_L, each one input
    without a batch dimension; RA1 over each stretch of equal-size representations), ``branch(i, x)`` the
    residual branch of block ``i`` at one input (the whole block for a plain network)."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = len(trajectories[0]) - 1
    line, evenness = zip(*(line_fit(torch.stack([t.flatten() for t in run])) for traj in trajectories
                           for run in _same_size_runs(traj) if len(run) >= 3))
    within, spectra, tops, cross = [], [], [], []
    for traj in trajectories:
        us: list[torch.Tensor | None] = []
        vs: list[torch.Tensor | None] = []
        for i in range(n_blocks):
            svd = top_singular(partial(branch, i), traj[i].detach(), k, generator=g)
            square = traj[i].numel() == traj[i + 1].numel()
            us.append(svd.u[0] if square else None)
            vs.append(svd.v[0] if square else None)
            spectra.append(svd.s)
            tops.append(float(svd.s[0]))
            if square:
                within.append(float((svd.u[0] @ svd.v[0]).abs()))
        cross.append(alignment_matrix(us, vs))
    spectrum = torch.stack(spectra).mean(0)
    return {"ra1_line_share": _mean(line), "ra1_step_cv": _mean(evenness),
            "ra2_within_block": _mean(within), "ra2_matrix": _rounded(torch.stack(cross).nanmean(0)),
            "ra3_spectrum": [round(float(s), 5) for s in spectrum], "ra3_effective_rank": effective_rank(spectrum),
            "ra3_rank_1pct": int((spectrum > 0.01 * spectrum[0]).sum()), "ra4_top_singular": _mean(tops)}


def _same_size_runs(traj: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """A trajectory cut where the representation changes size (a conv network's stages): RA1 is a property of
    each stretch of equal-size representations."""
    runs: list[list[torch.Tensor]] = [[traj[0]]]
    for t in traj[1:]:
        if t.numel() == runs[-1][-1].numel():
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _mean(values: Any) -> float:
    values = list(values)
    return round(sum(values) / len(values), 5) if values else float("nan")


def _rounded(m: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(float(v)) else round(float(v), 4) for v in row] for row in m]


def fc_measures(depth: int, residual: bool, scale: Scale, seed: int, trained: bool = True) -> dict[str, Any]:
    """A fully-connected network of ``depth`` blocks on the digits: trained (or at initialisation), its test
    accuracy and every property on ``scale.inputs`` test inputs."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = digits(seed)
    model = FCResNet(xtr.shape[1], scale.width, depth, residual=residual)
    if trained:
        train_fc(model, xtr, ytr, scale.epochs, seed)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xte).argmax(1) == yte).float().mean() * 100)
        trajectories = [[t[0] for t in model.trajectory(x[None])] for x in xte[: scale.inputs]]
    branch = (lambda i, z: model.branches[i](z)) if residual else (lambda i, z: model.block(i, z))
    return {"test_top1": round(accuracy, 2), **measure(trajectories, branch, scale.k, seed)}


def conv_measures(model: StagedNet, images: torch.Tensor, k: int, seed: int = 0) -> dict[str, Any]:
    """The properties of a trained CIFAR network (``resnets`` post-activation blocks) on ``images`` (normalised):
    its residual branches' Jacobians (plain blocks: the block's)."""
    blocks: list[Any] = blocks_of(model)  # BasicBlock or Bottleneck (conv_networks checks)
    model.eval()
    with torch.no_grad():
        trajectories = []
        for x in images:
            z = model.forward_stem(x[None])
            traj = [z[0]]
            for b in blocks:
                z = b(z)
                traj.append(z[0])
            trajectories.append(traj)

    def branch(i: int, z: torch.Tensor) -> torch.Tensor:
        b = blocks[i]
        return (b.branch(z[None]) if b.downsample is not None else b(z[None]))[0]

    return measure(trajectories, branch, k, seed)


def conv_networks(out: Path, checkpoints: list[str] | None = None, *, data: str = "cifar10",
                  data_root: str | None = None, quick: bool = False, epochs: float | None = None,
                  subset: int | None = None, seed: int = 0, progress: bool = True
                  ) -> tuple[dict[str, StagedNet], torch.Tensor]:
    """The CIFAR networks to measure and the test images to measure them on (normalised): the given training
    checkpoints, else ResNet-20 and plain-20 trained with the experiment recipe (``--quick``: 5,000 images, 3
    epochs) under ``out/conv``."""
    from ..data.sources import images_of
    from ..engine.evaluate import distinct_labels, load_checkpoint_and_data
    from .experiments import run_experiment

    if not checkpoints:
        if quick:
            subset, epochs = subset or 5000, epochs or 3
        trained = run_experiment("degradation", out / "conv", data=data, data_root=data_root, epochs=epochs,
                                 subset=subset, depths=(20,), seed=seed, progress=progress)
        checkpoints = [str(out / "conv" / r["folder"] / "best.pt") for r in trained["runs"]]
    networks: dict[str, StagedNet] = {}
    images = torch.zeros(0)
    for ckpt, label in zip(checkpoints, distinct_labels(checkpoints)):
        loaded = load_checkpoint_and_data(ckpt)
        name = loaded.checkpoint["config"]["model"]
        if not all(isinstance(b, (BasicBlock, Bottleneck)) for b in blocks_of(loaded.model)):
            raise ConfigError(f"{ckpt} holds {name}: the alignment measures take post-activation ResNet blocks "
                              "(resnet20, plain20 ...)")
        networks[f"{name} ({label})"] = loaded.model
        if not len(images):
            test = loaded.dataset.test if loaded.dataset.test is not None else loaded.dataset.val
            images = loaded.aug.eval(images_of(test, 64))
    return networks, images


def depth_exponent(depths: list[int], tops: list[float]) -> float:
    """The exponent a of top singular value ~ depth^a, fitted by least squares in log-log (RA4 expects about -1)."""
    lx = torch.tensor([math.log(d) for d in depths])
    ly = torch.tensor([math.log(t) for t in tops])
    lx = lx - lx.mean()
    return round(float((lx * (ly - ly.mean())).sum() / (lx * lx).sum()), 3)


def run_alignment(out: str | Path, *, quick: bool = False, seeds: int = 1, conv: dict[str, StagedNet] | None = None,
                  conv_images: torch.Tensor | None = None) -> dict[str, Any]:
    """The fully-connected networks (every depth, residual and plain, trained and at initialisation, ``seeds``
    seeds) and, given ``conv`` (label -> trained CIFAR network) and ``conv_images``, the conv networks; writes
    ``alignment.json`` and the figures into ``out``."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    scale = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fc: dict[str, dict[str, Any]] = {}
    for kind, residual, trained in (("residual", True, True), ("plain", False, True), ("residual_init", True, False)):
        fc[kind] = {}
        for depth in scale.depths:
            runs = [fc_measures(depth, residual, scale, s, trained) for s in range(seeds)]
            fc[kind][str(depth)] = _merge(runs)
    tops = [fc["residual"][str(d)]["ra4_top_singular"] for d in scale.depths]
    report: dict[str, Any] = {"classes": CLASSES, "width": scale.width, "depths": list(scale.depths),
                              "seeds": seeds, "fc": fc,
                              "ra4": {"depths": list(scale.depths), "top_singular": tops,
                                      "exponent": depth_exponent(list(scale.depths), tops)}}
    if conv and conv_images is not None:
        report["conv"] = {label: conv_measures(m, conv_images[: scale.conv_inputs], scale.conv_k)
                          for label, m in conv.items()}
    atomic_write(out / "alignment.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    report["figures"] = [str(p) for p in _figures(report, out)]
    return report


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several seeds' measures: the first run's matrices and spectra, each scalar's mean and its std."""
    merged = dict(runs[0])
    if len(runs) > 1:
        for key, value in runs[0].items():
            if isinstance(value, (int, float)):
                s = summarize([r[key] for r in runs])
                merged[key], merged[key + "_std"] = round(s.mean, 5), round(s.std, 5)
    return merged


def _figures(report: dict[str, Any], out: Path) -> list[Path]:
    from ..plots import plt, save_figure

    written = []
    mid = str(report["depths"][len(report["depths"]) // 2])
    panels = [(f"FC ResNet, {mid} blocks", report["fc"]["residual"][mid]),
              (f"FC plain, {mid} blocks", report["fc"]["plain"][mid]),
              ("FC ResNet at initialisation", report["fc"]["residual_init"][mid])]
    panels += [(label, m) for label, m in report.get("conv", {}).items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels):
        mat = torch.tensor([[float("nan") if v is None else v for v in row] for row in m["ra2_matrix"]])
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=title, xlabel="block m (right vector)", ylabel="block l (left vector)")
    fig.colorbar(im, ax=axes[0].tolist(), label="|<u_l, v_m>|")
    written.append(save_figure(fig, out / "alignment_ra2.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for title, m in panels:
        ax.semilogy(range(1, len(m["ra3_spectrum"]) + 1), m["ra3_spectrum"], "o-", ms=3, label=title)
    ax.axvline(report["classes"], color="grey", ls="--", label=f"C = {report['classes']}")
    ax.set(xlabel="index", ylabel="singular value (mean over blocks and inputs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out / "alignment_ra3.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ra4 = report["ra4"]
    ax.loglog(ra4["depths"], ra4["top_singular"], "o-", label=f"FC ResNets: exponent {ra4['exponent']:.2f}")
    ax.set(xlabel="blocks", ylabel="top singular value of a branch's Jacobian")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out / "alignment_ra4.png"))
    return written
