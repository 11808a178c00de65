"""``resnets compare A B ... --seeds N``: train every configuration with the same seeds and compare them with
honest statistics: accuracy per seed, mean ± std, a 95% interval, and paired tests against the first
configuration. A finished run (its ``report.json``) is reused, so a stopped comparison resumes."""
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


def run_one(config: str, seed: int, out: Path, overrides: dict[str, Any]) -> float:
    """Test top-1 (validation top-1 where there is no test split) of ``config`` trained with ``seed``."""
    report = out / "report.json"
    if not report.is_file():
        train(make_config(config, **{**overrides, "seed": seed, "out": str(out), "progress": False}))
    done = json.loads(report.read_text())
    split = done["test"] or done["val"]
    if split is None:
        raise ConfigError(f"{config}: the run has neither a test nor a validation split to compare on")
    return split["top1"]


def compare(configs: list[str], seeds: int, out: str | Path, overrides: dict[str, Any] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train each configuration (a shipped recipe or a YAML file) with seeds ``0 .. seeds-1`` and write
    ``compare.json`` and ``compare.png`` to ``out``; returns the report."""
    if len(configs) < 2 or len(set(configs)) != len(configs) or seeds < 2:
        raise ConfigError(f"compare needs at least two different configurations and --seeds >= 2, got "
                          f"{len(configs)} configuration(s) and {seeds} seed(s)")
    overrides = dict(overrides or {})
    for config in configs:  # every setting is checked before anything trains
        load_recipe(config)
        make_config(config, **overrides)
    out = Path(out)
    accuracy: dict[str, list[float]] = {}
    for config in configs:
        accuracy[_label(config)] = []
        for seed in range(seeds):
            top1 = run_one(config, seed, out / _label(config) / f"seed{seed}", overrides)
            accuracy[_label(config)].append(top1)
            log(f"{_label(config)} seed {seed}: top-1 {top1:.2f}%")
    first, *others = list(accuracy)
    report = {"configs": configs, "seeds": list(range(seeds)), "overrides": overrides, "top1": accuracy,
              "summary": {k: asdict(summarize(v)) for k, v in accuracy.items()},
              "paired_against_" + first: {k: asdict(paired(accuracy[k], accuracy[first])) for k in others}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    from ..plots import plot_comparison

    plot_comparison(accuracy, {k: summarize(v) for k, v in accuracy.items()}, out / "compare.png")
    return report
