"""Training runs longer than a machine's stint (a wall-time limit, a preemptible instance, a laptop that
sleeps), advanced in budgeted segments that resume exactly, from a manifest of runs in priority order.

    resnets campaign run runs.yaml --budget 230m             # resume, train at low priority, save every state
    resnets campaign run runs.yaml --parallel 2 --budget 2h # a CPU: two runs, each on half of the cores
    resnets campaign status runs.yaml                       # step / total, compute per kind, ETA, errors so far
    resnets campaign pause runs.yaml | resume               # SIGSTOP / SIGCONT the running campaign

The states live in ``<manifest's folder>/<manifest's name>/state/<run>/`` (``--state``): copy or commit that folder
to carry the runs to the next machine. SIGTERM or SIGINT makes a running campaign write every state and exit
within one training step; finished runs write ``<run>.json`` and their weights into ``--results``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ResnetsError

if TYPE_CHECKING:
    from ..engine.campaign import CampaignRun


def _assignment(text: str) -> tuple[str, str]:
    """``--var NAME=PATH``, the path kept as written."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, value


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The state and results folders: as given, else beside the manifest (``runs.yaml`` -> ``runs/state``)."""
    home = args.manifest.parent / args.manifest.stem
    return args.state or home / "state", args.results or home / "results"


def _manifest(args: argparse.Namespace) -> list[CampaignRun]:
    from ..engine.campaign import load_manifest

    return load_manifest(args.manifest, dict(args.var))


def _run(args: argparse.Namespace) -> None:
    from ..engine.campaign import Budget, CampaignLock, StopSignals, advance, parse_budget, unfinished
    from ..engine.predict import resolve_device

    state, results = _paths(args)
    runs = [r for r in _manifest(args) if args.only is None or r.name == args.only]
    if args.only is not None and not runs:
        raise ResnetsError(f"no run named {args.only} in {args.manifest}")
    seconds = parse_budget(args.budget)
    if args.parallel < 1:
        raise ResnetsError(f"--parallel {args.parallel}: give the number of runs to train at once, 1 or more")
    resolve_device(args.device)  # a device this machine lacks is refused before anything is written
    os.nice(args.nice)
    if args.parallel > 1:
        return _run_parallel(args, [r.name for r in unfinished(runs, results)], seconds)
    deadline = time.monotonic() + seconds
    lock = contextlib.nullcontext() if args.child else CampaignLock(state)
    with lock, StopSignals() as signals:
        for entry in unfinished(runs, results):
            budget = Budget(deadline, signals, args.max_steps)
            record = advance(entry, state, budget, results, args.device, args.compile)
            print(json.dumps({"run": entry.name, **record}), flush=True)
            if budget.over():
                break


# A slot whose run has finished takes the next one only if at least this much of the budget is left
MIN_SEGMENT_S = 120.0


def _run_parallel(args: argparse.Namespace, names: list[str], seconds: float) -> None:
    """``--parallel`` child processes, one run each (``--only``) with what is left of the budget: a slot whose
    run finishes takes the next unfinished run of ``names``, so no core idles while runs remain. SIGTERM and
    SIGINT are passed on to every child and stop the refilling."""
    from ..engine.campaign import CampaignLock

    state, results = _paths(args)
    deadline = time.monotonic() + seconds
    common = [str(args.manifest), "--state", str(state), "--results", str(results),
              "--device", args.device, "--nice", "0", "--child",
              *[f"--var={k}={v}" for k, v in args.var],
              *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
              *([] if args.compile is None else ["--compile" if args.compile else "--no-compile"])]
    queue, stopping, codes = list(names), False, []
    with CampaignLock(state):
        env = child_env(args.device, min(args.parallel, len(queue)))

        def start() -> tuple[str, subprocess.Popen]:
            name = queue.pop(0)
            budget = f"{max(0.0, deadline - time.monotonic()):.0f}s"
            return name, subprocess.Popen([sys.executable, "-m", "resnets", "campaign", "run", *common, "--budget",
                                           budget, "--only", name], env=env)

        live = [start() for _ in range(min(args.parallel, len(queue)))]

        def forward(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True
            for _, c in live:
                c.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while live:
                time.sleep(0.2)
                for name, child in [(n, c) for n, c in live if c.poll() is not None]:
                    live.remove((name, child))
                    codes.append(child.returncode)
                    finished = child.returncode == 0 and (results / f"{name}.json").is_file()
                    if finished and queue and not stopping and deadline - time.monotonic() >= MIN_SEGMENT_S:
                        live.append(start())
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for _, c in live:  # never outlive the campaign
                if c.poll() is None:
                    c.kill()
    if any(codes):
        raise ResnetsError(f"a campaign process failed (exit codes {codes}); its run's state is the last one written")


def child_env(device: str, children: int) -> dict[str, str]:
    """The environment of each of ``children`` campaign processes: on a CPU each gets an equal share of the
    cores this process may use (its threads), so that they do not fight over them; on a GPU, as it is."""
    from ..engine.predict import resolve_device

    env = dict(os.environ)
    if resolve_device(device).type == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // children))
    return env


MARKS = {"other runs": "*", "other networks": "**"}  # where a run's time left comes from, when not from itself
MARK_MEANS = {"other runs": "at the speed of the manifest's other runs of the same network on this kind of machine",
              "other networks": "from the speeds of the networks that ran on this kind of machine and the "
                                "multiply-accumulates of each (a rough guide)"}


def _status(args: argparse.Namespace) -> None:
    from ..engine.campaign import running_pid, status

    state, results = _paths(args)
    rows = status(_manifest(args), state, results)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    pid = running_pid(state)
    print(f"campaign {'running as process ' + str(pid) if pid else 'not running'}")
    for r in rows:
        eta = "done" if r["done"] else ("unknown here" if r["eta_s"] is None else f"{r['eta_s'] / 3600:.1f} h here"
                                        + MARKS.get(r["eta_from"], ""))
        spent = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in r["seconds_by_kind"].items()) or "-"
        extra = f"  test top-1 {r['test_top1']:.2f}%" if r["done"] else _last_epoch(r.get("last_epoch"))
        print(f"{r['run']:<22} {r['step']:>6} / {r['total'] or '?':<6} {eta:<14} compute: {spent}{extra}")
    left = [r for r in rows if not r["done"]]
    if left:
        unknown = sum(r["eta_s"] is None for r in left)
        print(f"left: {len(left)} run(s), {sum(r['eta_s'] or 0 for r in left) / 3600:.1f} h here"
              + (f" and {unknown} run(s) of unknown length" if unknown else ""))
    for source, mark in MARKS.items():
        if any(r["eta_from"] == source for r in rows):
            print(f"{mark} {MARK_MEANS[source]}")


def _last_epoch(last: dict[str, Any] | None) -> str:
    """How a run under way stands at its last finished epoch."""
    if not last:
        return ""
    val = "" if last["val_error"] is None else f", validation {last['val_error']:.2f}%"
    return f"  epoch {last['epoch']}: training error {last['train_error']:.2f}%{val}"


def _signal(args: argparse.Namespace) -> None:
    from ..engine.campaign import campaign_processes, pause_campaign, resume_campaign

    state, _ = _paths(args)
    pids = campaign_processes(state)
    if not pids:
        raise ResnetsError(f"no campaign is running on {state}")
    (pause_campaign if args.action == "pause" else resume_campaign)(state, pids)
    print(f"campaign process {pids[0]} {'paused' if args.action == 'pause' else 'resumed'}")


def add_campaign_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="long training runs advanced in budgeted, exactly resumed segments on "
                                        "machines with a time limit", description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("manifest", type=Path, help="YAML: 'runs:', a list of name, recipe, model, seed, data, "
                                                   "overrides, in priority order")
    where.add_argument("--state", type=Path, help="the state folder (default: <manifest folder>/<its name>/state)")
    where.add_argument("--results", type=Path, help="where finished runs go (default: .../<its name>/results)")
    where.add_argument("--var", action="append", type=_assignment, default=[], metavar="NAME=PATH",
                       help="fill {NAME} in the manifest's data entries (repeatable)")
    r = actions.add_parser("run", parents=[where], help="advance the unfinished runs within a budget")
    r.add_argument("--budget", default="150m", help="how long to train: 150m, 2h, 90s")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto")
    r.add_argument("--parallel", type=int, default=1, help="runs trained at once, one process each (on a CPU, "
                   "each with an equal share of the cores)")
    r.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train through torch.compile (default: where it pays, as training decides)")
    r.add_argument("--only", help="advance this run only")
    r.add_argument("--max-steps", type=int, help="stop each run after this many steps (a dry run)")
    r.add_argument("--nice", type=int, default=10, help="scheduling priority added (default 10: others first)")
    r.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    r.set_defaults(func=_run)
    s = actions.add_parser("status", parents=[where], help="step / total, compute per machine kind, ETA here and "
                                                             "the last epoch's errors")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_status)
    for name, text in (("pause", "SIGSTOP the running campaign (benchmarks do this while they time)"),
                       ("resume", "SIGCONT it")):
        actions.add_parser(name, parents=[where], help=text).set_defaults(func=_signal)
