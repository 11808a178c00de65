"""Training that outlives the machine: runs longer than any one machine's stint (a wall-time limit, a preemptible
instance, a laptop that sleeps) advanced in budgeted segments.

A campaign is a manifest of runs in priority order. ``advance`` resumes the first unfinished run from its
state (the run's ``last.pt``: weights, optimiser, random state, step and position in the data order, so the
result is the one an uninterrupted run gives), trains until the budget is spent or a signal asks it to stop,
and writes the state again: copying the state folder carries the runs to the next machine. The precision is
decided anew each segment (bfloat16 where this machine computes it natively, else float32), and every segment
records its machine, precision, steps and seconds. A finished run leaves a result JSON and its weights, and its
state is removed.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import CheckpointError, ConfigError, ResnetsError, yaml_problem
from ..files import atomic_write
from ..machine import cpu_isa, machine_info
from ..models import create_model, list_models
from ..models.profile import profile_model
from .checkpoint import load_training_checkpoint, save_weights
from .config import PER_MACHINE, TrainConfig, changed_settings, list_recipes, make_config
from .predict import evaluate_split
from .train import Run, end_epoch, setup, train_epoch

STATE_FORMAT = "resnets-campaign-v1"
SAVE_EVERY_S = 600.0  # a mid-epoch state at least this often: a hard stop loses little


@dataclass(frozen=True)
class CampaignRun:
    """One run of a manifest: a recipe, a model and a seed, on ``data`` (None: the recipe's), with ``overrides``
    of the recipe."""

    name: str
    recipe: str
    model: str
    seed: int = 0
    data: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, state: Path, device: str = "auto", compile: bool | None = None) -> TrainConfig:
        """The run's training configuration, writing to its folder under ``state`` (``compile``: through
        ``torch.compile``; None: where it pays, as training decides)."""
        return make_config(self.recipe, **{**self.overrides, "model": self.model, "seed": self.seed,
                                           "data": self.data, "out": str(state / self.name), "device": device,
                                           "compile": compile, "progress": False, "tensorboard": False,
                                           "eval_test": False})


def parse_budget(text: str) -> float:
    """Seconds in ``"150m"``, ``"2h"``, ``"90s"`` or ``"600"``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if m is None:
        raise ConfigError(f"budget {text!r} is not a duration: write e.g. 150m, 2h or 90s")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def load_manifest(path: str | Path, data: dict[str, str] | None = None) -> list[CampaignRun]:
    """The runs of a manifest (YAML: ``runs:``, a list of name, recipe, model, seed, data, overrides), each
    checked: a known recipe and model, a unique name, settings the configuration accepts. ``data`` fills
    ``{placeholders}`` in the data entries."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the campaign manifest {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"the campaign manifest {path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise ConfigError(f"{path} must hold 'runs:', a list of runs (name, recipe, model, seed, data)")
    runs: list[CampaignRun] = []
    for i, entry in enumerate(doc["runs"]):
        runs.append(_manifest_entry(entry, i, path, data or {}))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path} names a run twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return runs


def _manifest_entry(entry: Any, i: int, path: str | Path, data: dict[str, str]) -> CampaignRun:
    if not isinstance(entry, dict) or not {"name", "recipe", "model"} <= set(entry):
        raise ConfigError(f"run {i + 1} of {path} needs name, recipe and model")
    unknown = set(entry) - {"name", "recipe", "model", "seed", "data", "overrides"}
    if unknown:
        raise ConfigError(f"run {entry['name']} of {path} has unknown keys {sorted(unknown)}")
    if entry["recipe"] not in list_recipes():
        raise ConfigError(f"run {entry['name']}: unknown recipe {entry['recipe']!r} (resnets recipes lists them)")
    if entry["model"] not in list_models():
        raise ConfigError(f"run {entry['name']}: unknown model {entry['model']!r} (resnets list shows them)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(entry["name"])):
        raise ConfigError(f"run name {entry['name']!r} must be letters, digits, '.', '_' or '-'")
    try:
        where = None if entry.get("data") is None else str(entry["data"]).format(**data)
    except KeyError as e:
        raise ConfigError(f"run {entry['name']}: its data names {{{e.args[0]}}}: give the path with --var "
                          f"{e.args[0]}=PATH") from None
    except (IndexError, ValueError) as e:  # "{0}", a lone "{" or "}": braces hold only --var names
        raise ConfigError(f"run {entry['name']}: its data {entry['data']!r} is not a path with {{NAME}} "
                          f"placeholders ({e})") from None
    try:
        run = CampaignRun(str(entry["name"]), entry["recipe"], entry["model"], int(entry.get("seed", 0)), where,
                          dict(entry.get("overrides") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"run {entry['name']} of {path}: {type(e).__name__}: {e}") from None
    run.config(Path("state"))  # every setting checked now, before any work
    return run


class CampaignLock:
    """``state/RUNNING``, holding the process id while a campaign runs; a second process on the same folder is
    refused (a stale file, whose process is gone, is taken over)."""

    def __init__(self, state: Path):
        self.path = state / "RUNNING"

    def __enter__(self) -> "CampaignLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        other = running_pid(self.path.parent)
        if other is not None and other != os.getpid():
            raise ResnetsError(f"a campaign already runs on {self.path.parent} (process {other}): wait for it, "
                               f"or stop it with kill -TERM {other}")
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: Any) -> None:
        if running_pid(self.path.parent) == os.getpid():
            self.path.unlink(missing_ok=True)


def note_pause(state: Path, begins: bool) -> None:
    """Record in ``state/PAUSED`` that a pause of the campaign begins or ends (whoever stops it with SIGSTOP
    and continues it with SIGCONT calls this on both sides), so that the segments count training time, not the
    time they stood still."""
    path = state / "PAUSED"
    now = time.time()
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        rec = {}
    total, since = float(rec.get("total", 0.0)), rec.get("since")
    if begins:
        since = now
    elif since is not None:
        total, since = total + max(0.0, now - float(since)), None
    if path.parent.is_dir():
        text = json.dumps({"total": round(total, 3), "since": since})
        atomic_write(path, lambda f: f.write(text.encode()))


def paused_seconds(state: Path) -> float:
    """Seconds the campaign on ``state`` has stood still in pauses that ended (``note_pause``)."""
    try:
        return float(json.loads((state / "PAUSED").read_text()).get("total", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def campaign_processes(state: Path) -> list[int]:
    """The campaign running on ``state``: its process and all that descend from it (the parallel runs and their
    data workers); [] if none runs."""
    pid = running_pid(state)
    if pid is None:
        return []
    found, todo = [pid], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``: from Linux's /proc, else ``pgrep``; [] where neither can tell."""
    import subprocess

    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except OSError:
        pass
    try:
        listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(c) for c in listed.split()]


def pause_campaign(state: Path, pids: list[int]) -> None:
    """Stop the campaign's processes (SIGSTOP), the pause noted so that its segments leave it out of their time."""
    note_pause(state, begins=True)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def resume_campaign(state: Path, pids: list[int]) -> None:
    """Continue the campaign's processes (SIGCONT; any that ended meanwhile are passed over); note the end."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    note_pause(state, begins=False)


@contextlib.contextmanager
def campaign_paused(state: Path) -> Iterator[dict[str, Any]]:
    """Timing needs a quiet machine: a campaign running on ``state`` is stopped (SIGSTOP) while the block runs
    and continued after (SIGCONT). Yields what to record beside the timings."""
    pids = campaign_processes(state)
    if pids:
        pause_campaign(state, pids)
    try:
        yield {"campaign_paused": bool(pids), "campaign_pid": pids[0] if pids else None}
    finally:
        if pids:
            resume_campaign(state, pids)


def running_pid(state: Path) -> int | None:
    """The process id in ``state/RUNNING`` if that process is alive, else None."""
    try:
        pid = int((state / "RUNNING").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


class StopSignals:
    """SIGTERM and SIGINT set ``asked`` instead of ending the process: the campaign then writes its state and
    returns (within one step)."""

    def __init__(self) -> None:
        self.asked = False

    def __enter__(self) -> "StopSignals":
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.asked = True

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def machine_kind(device: torch.device) -> str:
    """A short name of the kind of machine a segment ran on: the GPU's name, or the CPU's instruction set."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_isa() or "cpu"


def _segments_path(state: Path, run: CampaignRun) -> Path:
    return state / run.name / "segments.json"


def read_segments(state: Path, run: CampaignRun) -> list[dict[str, Any]]:
    path = _segments_path(state, run)
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["segments"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}): restore it from version control") from None


def _write_segments(state: Path, run: CampaignRun, segments: list[dict[str, Any]]) -> None:
    text = json.dumps({"format": STATE_FORMAT, "run": run.name, "segments": segments}, indent=1)
    atomic_write(_segments_path(state, run), lambda f: f.write(text.encode() + b"\n"))


def check_state(run: CampaignRun, state: Path) -> Path | None:
    """The run's ``last.pt`` if there is one, after checking that it is whole and was made by this manifest
    entry's recipe (a changed setting would make the result neither the old run nor the new one)."""
    last = state / run.name / "last.pt"
    if not last.exists():
        return None
    ckpt = load_training_checkpoint(last)
    if ckpt.get("format") != "resnets-train-v1" or "optimizer" not in ckpt:
        raise CheckpointError(f"{last} is not a training state this version can resume: move it away to restart "
                              f"run {run.name}")
    want, had = run.config(state).to_dict(), dict(ckpt["config"])
    for cfg in (want, had):  # the same data wherever this clone keeps it
        cfg["data"] = Path(str(cfg["data"])).name
    changed = changed_settings(had, want)
    if changed:
        k = changed[0]
        raise ConfigError(f"run {run.name}: its state was made with {k}={ckpt['config'].get(k)!r}, the manifest now "
                          f"says {want[k]!r}: restore the manifest, or give the changed run a new name")
    return last


@dataclass
class Budget:
    """When a segment must end: ``deadline`` (``time.monotonic()``), a stop signal, or ``max_steps`` steps."""

    deadline: float
    signals: StopSignals | None = None
    max_steps: int | None = None
    steps: int = 0

    def over(self) -> bool:
        return (time.monotonic() >= self.deadline or (self.signals is not None and self.signals.asked)
                or (self.max_steps is not None and self.steps >= self.max_steps))


def advance(run: CampaignRun, state: Path, budget: Budget, results: Path, device: str = "auto",
            compile: bool | None = None) -> dict[str, Any]:
    """Train ``run`` on from its state until it ends or ``budget`` is over; returns this segment's record
    (and, for a finished run, writes its result and weights into ``results`` and removes its state)."""
    resume = check_state(run, state)
    segments = read_segments(state, run) if resume else []
    cfg = run.config(state, device, compile)
    run_obj = setup(cfg, resume, machine={k: getattr(cfg, k) for k in PER_MACHINE})
    record: dict[str, Any] = {
        "machine": machine_info().get("gpu") or machine_info()["cpu"], "kind": machine_kind(run_obj.device),
        "device": run_obj.device.type, "precision": run_obj.cfg.precision, "compiled": run_obj.compiled,
        "threads": torch.get_num_threads(), "start_step": run_obj.step, "total_steps": run_obj.total_steps,
        "steps": 0, "seconds": 0.0, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start, last_save, paused = time.perf_counter(), time.perf_counter(), paused_seconds(state)

    def keep() -> None:  # the segment's training seconds: its wall time less the pauses that benchmarks made
        seconds = time.perf_counter() - start - (paused_seconds(state) - paused)
        record["steps"], record["seconds"] = run_obj.step - record["start_step"], round(seconds, 1)
        _write_segments(state, run, [*segments, record])

    def control(r: Run) -> str | None:
        nonlocal last_save
        budget.steps += 1
        if budget.over() or time.perf_counter() - last_save > SAVE_EVERY_S:
            last_save = time.perf_counter()
            keep()
            return "stop" if budget.over() else "save"
        return None

    bar = _Silent()
    try:
        while run_obj.step < run_obj.total_steps and not budget.over():
            totals = train_epoch(run_obj, bar, control)
            if totals is None:
                break
            end_epoch(run_obj, totals, bar, None)
            keep()
    finally:
        if hasattr(run_obj.loader, "close"):
            run_obj.loader.close()
    keep()
    if run_obj.step >= run_obj.total_steps:
        finish(run, run_obj, [*segments, record], state, results)
    return record


class _Silent:
    """The progress bar's interface, printing nothing: a campaign's log is its segments."""

    def update(self, n: int) -> None: ...
    def set_description(self, text: str) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def write(self, text: str, file: Any = None) -> None: ...


def finish(run: CampaignRun, r: Any, segments: list[dict[str, Any]], state: Path, results: Path) -> Path:
    """A finished run's result: the final weights (no choice among epochs, none on the test split) scored once
    on validation and test in float32, the training error of the last epoch, the curves and every segment."""
    kwargs = dict(r.eval_kwargs(), precision="fp32")
    r.model.eval()
    val = evaluate_split(r.model, r.data.val, r.data.classes, r.aug, "val", **kwargs) if len(r.data.val) else None
    test = evaluate_split(r.model, r.data.test, r.data.classes, r.aug, "test", **kwargs)
    history = curves(r.history)
    result = {"run": run.name, "model": run.model, "recipe": run.recipe, "seed": run.seed,
              "data": Path(r.cfg.data).name, "splits": r.data.splits, "iterations": r.step,
              "test_top1": test.top1, "val_top1": val and val.top1, "final_train_error": history[-1]["train_error"],
              "final_val_error": history[-1]["val_error"], "weights": f"{run.name}.safetensors",
              "note": "the final weights after the full schedule; the test split was used once, at the end",
              "seconds_by_kind": seconds_by_kind(segments), "segments": segments, "config": r.cfg.to_dict(),
              "history": history}
    results.mkdir(parents=True, exist_ok=True)
    ckpt = {**r.meta, "model": r.model.state_dict()}
    save_weights(results / f"{run.name}.safetensors", ckpt, {"test_top1": test.top1, "val_top1": val and val.top1,
                                                            "iterations": r.step, "seed": run.seed,
                                                            "recipe": run.recipe, "campaign_run": run.name})
    out = results / f"{run.name}.json"
    atomic_write(out, lambda f: f.write(json.dumps(result, indent=2).encode() + b"\n"))
    shutil.rmtree(state / run.name)
    return out


def curves(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's per-epoch log as a result records it: step, learning rate, training loss, and the training and
    validation errors in percent."""
    return [{"epoch": h["epoch"], "step": h["step"], "lr": h["lr"], "train_loss": round(h["train_loss"], 5),
             "train_error": round(100 - h["train_acc"], 3),
             "val_error": None if h["val_acc"] is None else round(100 - h["val_acc"], 3)} for h in history]


def saved_segments(state: Path, run: CampaignRun) -> list[dict[str, Any]]:
    """The segments of a run that has a saved state; none where it has not started (or has finished)."""
    return read_segments(state, run) if (state / run.name / "last.pt").exists() else []


def progress(run: CampaignRun, state: Path, segments: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """An unfinished run's curves so far, from its saved state: ``run``, ``model``, ``seed``, ``step``,
    ``total`` (the steps of the whole run) and ``history`` as in a result; None where it has no state yet.
    ``segments``: its ``saved_segments``, where the caller has read them already."""
    segments = saved_segments(state, run) if segments is None else segments
    if not segments:
        return None
    ckpt = load_training_checkpoint(state / run.name / "last.pt")
    return {"run": run.name, "model": run.model, "seed": run.seed, "step": ckpt["step"],
            "total": segments[-1]["total_steps"], "history": curves(ckpt["history"])}


def seconds_by_kind(segments: list[dict[str, Any]]) -> dict[str, float]:
    """Training seconds per kind of machine over a run's segments."""
    kinds: dict[str, float] = {}
    for seg in segments:
        kinds[seg["kind"]] = round(kinds.get(seg["kind"], 0.0) + seg["seconds"], 1)
    return kinds


def unfinished(runs: list[CampaignRun], results: Path) -> Iterator[CampaignRun]:
    return (r for r in runs if not (results / f"{r.name}.json").is_file())


def status(runs: list[CampaignRun], state: Path, results: Path) -> list[dict[str, Any]]:
    """Per run: steps done of the total, compute spent per kind of machine, the time left on this kind of
    machine (``eta_s``) and where it comes from (``eta_from``): the speed here of the run's network, pooled over
    the run's own segments and those of the manifest's other runs of the same network (``"this network"`` where
    the run itself ran here, else ``"other runs"``: a step costs the same in every run of one network, and the
    pool keeps one segment slowed by other work on the machine from deciding the estimate), else the speeds of
    the other networks that ran here and the multiply-accumulates of each (``"other networks"``); None where no
    network ran here. For a run under way, its last finished epoch's training and validation error
    (``last_epoch``, None before the first ends)."""
    rows = []
    kind = cpu_isa() or "cpu"
    done = {r.name: json.loads((results / f"{r.name}.json").read_text()) for r in runs
            if (results / f"{r.name}.json").is_file()}
    segments = {r.name: done[r.name].get("segments", []) if r.name in done else saved_segments(state, r) for r in runs}
    for run in runs:
        if run.name in done:
            res = done[run.name]
            rows.append({"run": run.name, "step": res["iterations"], "total": res["iterations"], "done": True,
                         "test_top1": res["test_top1"], "seconds_by_kind": res["seconds_by_kind"], "eta_s": 0,
                         "eta_from": "this run"})
            continue
        own = segments[run.name]
        step = own[-1]["start_step"] + own[-1]["steps"] if own else 0
        total = own[-1]["total_steps"] if own else _total_steps(run)
        alike = [seg for r in runs if r.model == run.model and r.name != run.name for seg in segments[r.name]]
        rate = seconds_per_step(alike + own, kind)  # its own segments last: they say how it runs now
        eta_from = "this network" if seconds_per_step(own, kind) is not None else "other runs"
        if rate is None:
            rate, eta_from = _scaled_rate(run, runs, segments, kind), "other networks"
        so_far = progress(run, state, own)
        last = so_far["history"][-1] if so_far and so_far["history"] else None
        eta = None if rate is None or total is None else round(rate * (total - step))
        rows.append({"run": run.name, "step": step, "total": total, "done": False,
                     "seconds_by_kind": seconds_by_kind(own), "eta_s": eta,
                     "eta_from": None if eta is None else eta_from,
                     "last_epoch": last and {k: last[k] for k in ("epoch", "train_error", "val_error")}})
    return rows


def seconds_per_step(segments: list[dict[str, Any]], kind: str) -> float | None:
    """A network's speed on ``kind``: seconds over steps, pooled over the ``segments`` there that ran as the last
    one there did (as many threads: alone, or beside another run; compiled or not). Pooled, a segment slowed by
    other work on the machine, or cut short after its compilation, weighs by its steps alone. None where none
    ran there."""
    here = [seg for seg in segments if seg["kind"] == kind and seg["steps"] > 0]
    if not here:
        return None
    last = here[-1]
    alike = [seg for seg in here if seg.get("threads") == last.get("threads")
             and seg.get("compiled") == last.get("compiled")]
    return sum(seg["seconds"] for seg in alike) / sum(seg["steps"] for seg in alike)


def _scaled_rate(run: CampaignRun, runs: list[CampaignRun], segments: dict[str, list[dict[str, Any]]],
                 kind: str) -> float | None:
    """Seconds a step for ``run`` from the networks that ran on ``kind``: a straight line through their seconds
    a step against their multiply-accumulates a step (a fixed cost and a cost per multiply-accumulate: small
    networks run further from the peak), or, where they all have one count, that network's speed scaled by the
    counts. A rough guide; None where no network ran there."""
    points = []
    for model in dict.fromkeys(r.model for r in runs):
        rate = seconds_per_step([seg for r in runs if r.model == model for seg in segments[r.name]], kind)
        if rate is not None:
            points.append((float(_macs_per_step(next(r for r in runs if r.model == model))), rate))
    if not points:
        return None
    mine = _macs_per_step(run)
    macs, rates = zip(*points)
    if len(set(macs)) > 1:
        slope, intercept = statistics.linear_regression(macs, rates)
        if slope > 0 and intercept + slope * mine > 0:
            return intercept + slope * mine
    return statistics.fmean(rates) * mine / statistics.fmean(macs)


def _macs_per_step(run: CampaignRun) -> int:
    """Multiply-accumulates of one forward pass of the run's batch at its training size (CIFAR's 32 pixels where
    the recipe does not say)."""
    cfg = run.config(Path("state"))
    return cfg.batch_size * _macs_per_image(run.model, cfg.crop_size or cfg.image_size or 32)


@functools.lru_cache(maxsize=None)
def _macs_per_image(model: str, size: int) -> int:
    return sum(row.macs for row in profile_model(create_model(model, num_classes=10), size))


def _total_steps(run: CampaignRun) -> int | None:
    """The run's length in steps before it starts, from its recipe: epochs x full batches of CIFAR's 50,000
    training images less the validation split (the last partial batch is dropped); None for other data."""
    cfg = run.config(Path("state"))
    if "cifar" not in cfg.data.lower() or cfg.val_size is None:
        return None
    train = 50000 - (cfg.val_size if cfg.val_size >= 1 else round(50000 * cfg.val_size))
    return round(cfg.epochs * (int(train) // cfg.batch_size))
