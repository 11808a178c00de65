"""The ODE view, measured: a weight-tied Euler network (``odenet20``) trained with 3 steps a stage, then evaluated
with fewer and more steps of the same flow, against its untied twin (``eulernet20``), whose step count is fixed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..engine.evaluate import load_checkpoint_and_data, split_of
from ..engine.predict import evaluate_split
from ..errors import ConfigError
from ..files import atomic_write
from ..models.ode import ODENet

STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


def steps_sweep(checkpoint: Path, steps: tuple[int, ...] = STEPS, split: str = "val") -> list[dict[str, float]]:
    """Top-1 on ``split`` of a weight-tied checkpoint evaluated with each number of Euler steps per stage."""
    loaded = load_checkpoint_and_data(checkpoint)
    model = loaded.model
    if not isinstance(model, ODENet):
        raise ConfigError(f"{checkpoint} holds a {type(model).__name__}: sweeping the Euler steps needs a "
                          "weight-tied ODE network (odenet20)")
    wanted = getattr(loaded.dataset, split, None)
    data = split_of(loaded.dataset, split if wanted is not None and len(wanted) else "test")
    rows = []
    for k in steps:
        model.set_steps(k)
        rows.append({"steps": k, "top1": evaluate_split(model, data, loaded.dataset.classes, loaded.aug,
                                                         split).top1})
    return rows


def analyse_ode(out: Path, results: list[dict[str, Any]]) -> list[Path]:
    """After ``resnets experiment ode`` trained both networks: the sweep, ``ode.json`` and ``ode.png``."""
    from ..plots import plt, save_figure

    tied = next(r for r in results if r["model"] == "odenet20")
    untied = next(r for r in results if r["model"] == "eulernet20")
    sweep = steps_sweep(out / tied["folder"] / "best.pt")
    tied["steps_sweep"] = sweep
    report = {"trained_with_steps": 3, "split": "val", "tied": sweep,
              "untied_val_top1": round(100 - untied["val_error"], 2)}
    atomic_write(out / "ode.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([r["steps"] for r in sweep], [r["top1"] for r in sweep], "o-", label="weight-tied (odenet20)")
    ax.axhline(report["untied_val_top1"], color="C1", ls="--", label="untied, 3 steps (eulernet20)")
    ax.axvline(3, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="Euler steps per stage at evaluation (trained with 3)", ylabel="validation top-1 (%)")
    ax.set_xticks(list(STEPS), [str(s) for s in STEPS])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_figure(fig, out / "ode.png")]
