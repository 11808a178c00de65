"""``resnets compare A B ... --seeds N``: train every configuration with the same seeds and compare them with
honest statistics: accuracy per seed, mean ± std, a 95% interval, and paired tests against the first
configuration. ``--kfold K`` instead trains each on K-1 of K class-balanced folds of the training data and
validates on the remaining one, for each of the K folds (seed fixed), pairing by fold. A finished run (its
``report.json``) is reused, so a stopped comparison resumes."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..engine.config import load_recipe, make_config
from ..engine.train import train
from ..errors import ConfigError
from ..files import atomic_write
from .stats import paired, summarize


def _label(config: str) -> str:
    return Path(config).stem if config.endswith((".yaml", ".yml")) else config


def run_one(config: str, unit: dict[str, Any], out: Path, overrides: dict[str, Any]) -> float:
    """Top-1 of ``config`` trained with the settings of ``unit`` (a seed, or a fold): on the held-out fold with
    folds, else on the test split (the validation split where there is no test split)."""
    report = out / "report.json"
    if not report.is_file():
        train(make_config(config, **{**overrides, **unit, "out": str(out), "progress": False}))
    done = json.loads(report.read_text())
    split = done["val"] if unit.get("folds") else done["test"] or done["val"]
    if split is None:
        raise ConfigError(f"{config}: the run has neither a test nor a validation split to compare on")
    return split["top1"]


def _units(seeds: int, kfold: int) -> list[tuple[str, dict[str, Any]]]:
    """What varies between the runs of one configuration, and the folder name of each."""
    if kfold:
        return [(f"fold{k}", {"folds": kfold, "fold": k, "eval_test": False}) for k in range(kfold)]
    return [(f"seed{s}", {"seed": s}) for s in range(seeds)]


def compare(configs: list[str], seeds: int, out: str | Path, overrides: dict[str, Any] | None = None,
            log: Callable[[str], None] = print, kfold: int = 0) -> dict[str, Any]:
    """Train each configuration (a shipped recipe or a YAML file) with seeds ``0 .. seeds-1`` (or, with
    ``kfold`` K, on each of K cross-validation folds) and write ``compare.json`` and ``compare.png`` to ``out``;
    returns the report."""
    if len(configs) < 2 or len(set(configs)) != len(configs) or (seeds < 2 and not kfold) or kfold == 1:
        raise ConfigError(f"compare needs at least two different configurations and --seeds >= 2 (or --kfold "
                          f">= 2), got {len(configs)} configuration(s), {seeds} seed(s) and {kfold} folds")
    overrides, units = dict(overrides or {}), _units(seeds, kfold)
    for config in configs:  # every setting is checked before anything trains
        load_recipe(config)
        make_config(config, **{**overrides, **units[-1][1]})
    out = Path(out)
    accuracy: dict[str, list[float]] = {}
    for config in configs:
        accuracy[_label(config)] = []
        for name, unit in units:
            top1 = run_one(config, unit, out / _label(config) / name, overrides)
            accuracy[_label(config)].append(top1)
            log(f"{_label(config)} {name.replace('seed', 'seed ').replace('fold', 'fold ')}: top-1 {top1:.2f}%")
    first, *others = list(accuracy)
    report = {"configs": configs, "seeds": [] if kfold else list(range(seeds)), "kfold": kfold,
              "evaluated_on": "the held-out fold" if kfold else "the test split", "overrides": overrides,
              "top1": accuracy,
              "summary": {k: asdict(summarize(v)) for k, v in accuracy.items()},
              "paired_against_" + first: {k: asdict(paired(accuracy[k], accuracy[first])) for k in others}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    from ..plots import plot_comparison

    plot_comparison(accuracy, {k: summarize(v) for k, v in accuracy.items()}, out / "compare.png")
    return report
