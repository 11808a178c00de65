"""The paper's experiments, each one command (``resnets experiment NAME``) that trains the networks it
compares with one recipe (``recipes/experiment.yaml``, scaled by ``--epochs``/``--subset``) and writes
figures, a CSV of the numbers and a markdown report.

| name          | compares                                                              | paper              |
|---------------|-----------------------------------------------------------------------|--------------------|
| `degradation` | plain-20/56 against ResNet-20/56                                      | He et al. Fig. 6   |
| `shortcuts`   | shortcut options A, B and C at one depth                              | He et al. Table 3  |
| `preact`      | post- against pre-activation at one depth (option B shortcuts both)   | He et al. 2016     |
| `depth`       | ResNet-20/32/44/56/110: accuracy and time against depth               | He et al. Table 6  |
| `highway`     | plain, highway (gated shortcuts) and residual networks of one depth   | Srivastava 2015    |
| `ode`         | a weight-tied Euler network evaluated with 1 to 32 steps, and untied  | Chen et al. 2018   |
| `momentum`    | Momentum ResNet-20 against ResNet-20; step memory and time vs depth   | Sander et al. 2021 |

Every network trains in its own folder under the output folder; a run that was stopped resumes from
its ``last.pt``, and a finished one is not trained again.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..engine import make_config, train
from ..errors import ConfigError
from ..models import create_model
from .stats import paired, summarize

log = logging.getLogger("resnets")


@dataclass(frozen=True)
class Run:
    """One network of an experiment."""

    label: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.label.lower()).strip("-")


def _blocks(depth: int, per_block: int = 6) -> int:
    if depth < 8 or (depth - 2) % per_block:
        raise ConfigError(f"CIFAR depth must be {per_block}n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // per_block


def _cifar(kind: str, depth: int, **args: Any) -> tuple[str, dict[str, Any]]:
    """A CIFAR network of any 6n+2 depth: the registered one when it exists, else the same with n blocks."""
    n = _blocks(depth)
    name = f"{kind}{depth}"
    from ..models import list_models

    if name in list_models():
        return name, args
    return f"{kind}20", {**args, "layers": (n, n, n)}


def _degradation(depths: tuple[int, ...]) -> list[Run]:
    return [Run(f"{kind}-{d}", *_cifar(k, d)) for kind, k in (("plain", "plain"), ("ResNet", "resnet"))
            for d in depths]


def _shortcuts(depths: tuple[int, ...]) -> list[Run]:
    return [Run(f"ResNet-{d} option {o}", *_cifar("resnet", d, shortcut=o)) for d in depths for o in "ABC"]


def _preact(depths: tuple[int, ...]) -> list[Run]:
    runs = []
    for d in depths:
        n = _blocks(d)
        runs += [Run(f"post-activation ResNet-{d}", *_cifar("resnet", d, shortcut="B")),
                 Run(f"pre-activation ResNet-{d}", "preact_resnet110", {"layers": (n, n, n)})]
    return runs


def _highway(depths: tuple[int, ...]) -> list[Run]:
    return [Run(f"{label}-{d}", *_cifar(kind, d)) for d in depths
            for label, kind in (("plain", "plain"), ("highway", "highway"), ("ResNet", "resnet"))]


def _depth(depths: tuple[int, ...]) -> list[Run]:
    return [Run(f"ResNet-{d}", *_cifar("resnet", d)) for d in depths]


def _ode(depths: tuple[int, ...]) -> list[Run]:
    return [Run("tied (ODE) 20", "odenet20"), Run("untied 20", "eulernet20")]


def _analyse_ode(out: Path, results: list[dict[str, Any]], quick: bool) -> list[Path]:
    from .ode import analyse_ode

    return analyse_ode(out, results)


def _momentum(depths: tuple[int, ...]) -> list[Run]:
    return [Run(f"{label}-{d}", *_cifar("resnet", d, **args)) for d in depths
            for label, args in (("ResNet", {}), ("Momentum ResNet", {"momentum": 0.9}))]


def _analyse_momentum(out: Path, results: list[dict[str, Any]], quick: bool) -> list[Path]:
    from .momentum import analyse_momentum

    return analyse_momentum(out, results, quick)


@dataclass(frozen=True)
class Experiment:
    title: str
    depths: tuple[int, ...]  # the default; --depth replaces it
    runs: Callable[[tuple[int, ...]], list[Run]]
    paper: str
    # more figures after training: (out, results, quick) -> figures
    analyse: Callable[[Path, list[dict[str, Any]], bool], list[Path]] | None = None


EXPERIMENTS: dict[str, Experiment] = {
    "degradation": Experiment("Plain against residual networks: the degradation problem", (20, 56), _degradation,
                              "plain-56 has a higher training and test error than plain-20 (Fig. 6, left), while "
                              "ResNet-56 beats ResNet-20: 6.97% against 8.75% CIFAR-10 test error (Table 6)"),
    "shortcuts": Experiment("Shortcut options A, B and C", (32,), _shortcuts,
                            "ImageNet ResNet-34 top-1 error: A 25.03%, B 24.52%, C 24.19% (He et al. 2015, Table 3): "
                            "the three are close, projections help a little"),
    "preact": Experiment("Post-activation against pre-activation", (110,), _preact,
                         "CIFAR-10 ResNet-110 error: original 6.61%, pre-activation 6.37% (He et al. 2016, Table 3)"),
    "depth": Experiment("Accuracy and cost against depth", (20, 32, 44, 56, 110), _depth,
                        "CIFAR-10 test error: ResNet-20 8.75%, 32 7.51%, 44 7.17%, 56 6.97%, 110 6.43% "
                        "(He et al. 2015, Table 6)"),
    "highway": Experiment("Gated against identity shortcuts: highway and residual networks", (56,), _highway,
                          "highway networks (transform gates T(x), carry 1 - T(x), gate biases starting negative) "
                          "train at depths where plain networks fail (Srivastava et al. 2015, Fig. 1); residual "
                          "networks are the gate-free case, T = 1 on the branch and 1 on the shortcut"),
    "ode": Experiment("The ODE view: residual stages as Euler steps", (20,), _ode,
                      "a residual block is an Euler step x + h f(x); with shared weights the network is an ODE "
                      "solver whose step count can change after training (Chen et al. 2018; Haber and Ruthotto 2017)",
                      _analyse_ode),
    "momentum": Experiment("Momentum ResNets: memory that does not grow with depth", (20,), _momentum,
                           "Momentum ResNets (v <- gamma v + (1 - gamma) f(x), x <- x + v) match ResNets' accuracy "
                           "on CIFAR-10 while their invertible backward stores no activations per block: memory "
                           "constant in depth (Sander et al. 2021, Table 2 and Fig. 5)", _analyse_momentum),
}


def run_experiment(name: str, out: str | Path, *, data: str = "cifar10", data_root: str | None = None,
                   epochs: float | None = None, subset: int | None = None, depths: tuple[int, ...] | None = None,
                   seed: int = 0, seeds: int = 1, progress: bool = True, quick: bool = False,
                   **overrides: Any) -> dict[str, Any]:
    """Train every network of experiment ``name`` with seeds ``seed .. seed + seeds - 1`` (resuming or
    skipping finished ones) and write ``results.csv``, the figures and ``report.md`` into ``out``; returns the
    results, each network's numbers the mean over its seeds (with their standard deviation when ``seeds > 1``)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    exp = EXPERIMENTS[name]
    out = Path(out)
    planned = []  # every run's settings checked before the first one trains
    for index, run in enumerate(exp.runs(tuple(depths or exp.depths))):
        for s in range(seed, seed + seeds):
            folder = out / run.folder if seeds == 1 else out / run.folder / f"seed{s}"
            settings = dict(model=run.model, model_args=run.model_args, data=data, data_root=data_root,
                            out=str(folder), seed=s, progress=progress, **overrides)
            settings.update({k: v for k, v in (("epochs", epochs), ("subset", subset)) if v is not None})
            planned.append((index, run, folder, make_config("experiment", **settings)))
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[int, list[dict[str, Any]]] = {}
    for index, run, folder, cfg in planned:
        if not (folder / "report.json").exists():
            resume = folder / "last.pt"
            log.info("experiment %s: training %s (%s, seed %d)%s", name, run.label, run.model, cfg.seed,
                     ", resuming" if resume.exists() else "")
            train(cfg, resume=resume if resume.exists() else None)
        per_seed.setdefault(index, []).append(_collect(run, folder, out))
    results = [merge_seeds(rows) for rows in per_seed.values()]
    _write_csv(results, out / "results.csv")
    figures = _figures(name, results, out) + (exp.analyse(out, results, quick) if exp.analyse else [])
    (out / "report.md").write_text(_report(name, exp, results, figures, data, epochs, subset))
    return {"experiment": name, "seeds": list(range(seed, seed + seeds)), "runs": results,
            "figures": [str(f) for f in figures], "out": str(out)}


def _collect(run: Run, folder: Path, out: Path) -> dict[str, Any]:
    """What one finished run measured: per-epoch curves, final errors and its size and time."""
    report = json.loads((folder / "report.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    model = create_model(run.model, **run.model_args)
    last = rows[-1]
    gates = gate_openness(folder / "best.pt") if run.model.startswith("highway") else None
    return {"label": run.label, "model": run.model, "model_args": run.model_args, "gates": gates,
            "folder": folder.relative_to(out).as_posix(), "seed": report["config"]["seed"],
            "params": sum(p.numel() for p in model.parameters()), "epochs": last["epoch"],
            "train_error": round(100 - last["train_acc"], 2), "val_error": round(100 - report["val"]["top1"], 2),
            "test_error": round(100 - report["test"]["top1"], 2) if report.get("test") else None,
            "seconds": round(report["seconds"], 1), "curve": [
                {"step": r["step"], "train_error": 100 - r["train_acc"], "val_error": 100 - r["val_acc"]}
                for r in rows]}


MEASURES = ("train_error", "val_error", "test_error", "seconds")


def merge_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One network's runs over several seeds as one row: each measure's mean, its sample standard deviation
    (``*_std``) and the values per seed (``*_per_seed``); curves and gate openings averaged point by point.
    The first seed's run stands for the network where one is needed (``folder``)."""
    merged = {**rows[0], "seeds": [r["seed"] for r in rows]}
    if len(rows) == 1:
        return merged
    for key in MEASURES:
        values = [r[key] for r in rows]
        if None not in values:
            s = summarize(values)
            merged.update({key: round(s.mean, 2), key + "_std": round(s.std, 2), key + "_per_seed": values})
    merged["curve"] = _mean_curve([r["curve"] for r in rows])
    if rows[0]["gates"]:
        merged["gates"] = [round(sum(g) / len(g), 4) for g in zip(*(r["gates"] for r in rows))]
    return merged


def _mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    merged = []
    for points in zip(*curves):
        row = {"step": points[0]["step"]}
        for key in ("train_error", "val_error"):
            s = summarize([p[key] for p in points])
            row[key], row[key + "_std"] = s.mean, s.std
        merged.append(row)
    return merged


def gate_openness(checkpoint: Path, images: int = 512) -> list[float]:
    """The mean transform-gate value T(x) of each highway block of a trained checkpoint, over up to ``images``
    validation images (test images where there is no validation split): 0 carries the input, 1 transforms it."""
    import torch

    from ..data import take
    from ..data.sources import images_of
    from ..engine.evaluate import load_checkpoint_and_data
    from ..models import HighwayBlock

    loaded = load_checkpoint_and_data(checkpoint)
    split = loaded.dataset.val if len(loaded.dataset.val) or loaded.dataset.test is None else loaded.dataset.test
    n = min(images, len(split))
    with torch.no_grad():
        loaded.model.eval()(loaded.aug.eval(images_of(take(split, n), n)))
    return [round(b.openness, 4) for b in loaded.model.modules()
            if isinstance(b, HighwayBlock) and b.openness is not None]  # set by the forward pass above


def _write_csv(results: list[dict[str, Any]], path: Path) -> None:
    keys = ["label", "model", "params", "epochs", *MEASURES]
    if len(results[0]["seeds"]) > 1:
        keys += ["seeds", *(k + "_std" for k in MEASURES)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        for r in results:
            writer.writerow({k: len(r[k]) if k == "seeds" else r.get(k) for k in keys})


def _figures(name: str, results: list[dict[str, Any]], out: Path) -> list[Path]:
    from ..plots import plt, save_figure

    written = []
    groups = ([[r for r in results if r["label"].startswith(p)] for p in ("plain", "ResNet")]
              if name == "degradation" else [results])
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        for r in group:
            steps = [c["step"] for c in r["curve"]]
            line, = ax.plot(steps, [c["train_error"] for c in r["curve"]], "--", lw=1)
            val = [c["val_error"] for c in r["curve"]]
            ax.plot(steps, val, "-", lw=2.2, color=line.get_color(), label=r["label"])
            if "val_error_std" in r["curve"][0]:  # several seeds: mean ± one standard deviation
                spread = [c["val_error_std"] for c in r["curve"]]
                ax.fill_between(steps, [v - d for v, d in zip(val, spread)], [v + d for v, d in zip(val, spread)],
                                color=line.get_color(), alpha=0.2, lw=0)
        ax.set(xlabel="iterations", ylabel="error (%)")
        ax.grid(alpha=0.3)
        band = ", band: ± 1 std over seeds" if "val_error_std" in group[0]["curve"][0] else ""
        ax.legend(title="dashed: training, bold: validation" + band, fontsize=8, title_fontsize=8)
    written.append(save_figure(fig, out / "curves.png"))

    gated = [r for r in results if r.get("gates")]
    if gated:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for r in gated:
            ax.plot(range(1, len(r["gates"]) + 1), r["gates"], "o-", label=r["label"])
        ax.set(xlabel="block", ylabel="mean transform gate T(x)", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(save_figure(fig, out / "gates.png"))

    if name in ("depth", "shortcuts", "preact"):
        fig, ax1 = plt.subplots(figsize=(7, 4))
        labels = [r["label"].replace("ResNet-", "") for r in results]
        errs = [r["test_error"] if r["test_error"] is not None else r["val_error"] for r in results]
        spread = [r.get("test_error_std" if r["test_error"] is not None else "val_error_std", 0) for r in results]
        ax1.bar(labels, errs, yerr=spread, capsize=4, color="#4c72b0")
        ax1.set(ylabel="test error (%)", xlabel="network")
        ax2 = ax1.twinx()
        ax2.plot(labels, [r["seconds"] for r in results], "o-", color="#dd8452")
        ax2.set_ylabel("training time (s)", color="#dd8452")
        written.append(save_figure(fig, out / "summary.png"))
    return written


def _cell(r: dict[str, Any], key: str) -> str:
    if r[key] is None:
        return "-"
    return f"{r[key]:.2f} ± {r[key + '_std']:.2f}%" if key + "_std" in r else f"{r[key]:.2f}%"


def _paired_lines(results: list[dict[str, Any]]) -> list[str]:
    """Over several seeds: each network against the first, paired by seed (test error, else validation)."""
    if len(results[0]["seeds"]) < 2:
        return []
    key = "test_error" if results[0]["test_error"] is not None else "val_error"
    base, lines = results[0], []
    for r in results[1:]:
        t = paired(r[key + "_per_seed"], base[key + "_per_seed"])
        lines.append(f"- {r['label']} against {base['label']}: {t.mean_difference:+.2f} points of "
                     f"{key.replace('_', ' ')}, paired t-test p = {t.t_test_p:.3g} over {t.n} seeds")
    return ["Paired by seed:", "", *lines, ""]


def _report(name: str, exp: Experiment, results: list[dict[str, Any]], figures: list[Path], data: str,
            epochs: float | None, subset: int | None) -> str:
    lines = [f"# {exp.title}", "",
             f"Experiment `{name}` on `{Path(data).name}`"
             + (f", {epochs:g} epochs" if epochs is not None else "")
             + (f", {subset} training images" if subset is not None else "")
             + " (recipe `experiment`: batch 128, SGD 0.1, momentum 0.9, wd 1e-4, cosine)"
             + (f"; mean ± standard deviation over {len(results[0]['seeds'])} seeds "
                f"({', '.join(map(str, results[0]['seeds']))})" if len(results[0]["seeds"]) > 1 else "") + ".", "",
             "| network | parameters | epochs | final training error | best validation error | test error | time |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['params']:,} | {r['epochs']} | {_cell(r, 'train_error')} | "
                     f"{_cell(r, 'val_error')} | {_cell(r, 'test_error')} | {r['seconds']:.0f} s |")
    lines += ["", f"Paper: {exp.paper}.", "", *_paired_lines(results)]
    for r in results:
        if r.get("steps_sweep"):
            lines += [f"{r['label']} evaluated with other numbers of Euler steps per stage (trained with 3), "
                      "validation top-1: " + ", ".join(f"{s['steps']}: {s['top1']:.2f}%" for s in r["steps_sweep"]), ""]
        if r.get("gates"):
            lines += [f"Mean transform-gate opening of {r['label']}, block by block (0: carry the input, 1: "
                      f"transform it): " + ", ".join(f"{g:.2f}" for g in r["gates"]), ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += ["", "The validation split is held out of the training data and chose each run's best epoch; the "
              "test split was evaluated once per run, at the end.", ""]
    return "\n".join(lines)
