"""The training campaign: the long runs of bench/campaign.yaml, advanced by every machine that gets a turn.

    python bench/campaign.py run --budget 150m            # resume, train at low priority, write the states
    python bench/campaign.py run --device cuda --parallel 7 --compile --budget 9m   # a GPU: every run at once
    python bench/campaign.py run --parallel 2 --budget 150m   # a CPU: two runs, each on half of the cores
    python bench/campaign.py status                       # step / total, compute per machine kind, ETA here
    python bench/campaign.py pause | resume               # SIGSTOP / SIGCONT the running campaign

States live in bench/campaign/state/<run>/ (last.pt and segments.json, one per unfinished run, replaced each
time: commit that folder to carry the runs on); a finished run writes bench/results/campaign/<run>.json and
its weights and its state is removed. While it runs, state/RUNNING holds its process id; SIGTERM or SIGINT
makes it write every state and exit within one training step. Runs in the foreground print one line a segment.
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

from resnets.engine.campaign import (Budget, CampaignLock, StopSignals, advance, load_manifest, parse_budget,
                                     running_pid, status, unfinished)
from resnets.engine.predict import resolve_device
from resnets.errors import ResnetsError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CIFAR10_LOSSLESS, RESULTS, campaign_processes, continue_campaign, stop_campaign  # noqa: E402

MANIFEST = HERE / "campaign.yaml"
STATE = HERE / "campaign" / "state"
CAMPAIGN_RESULTS = RESULTS / "campaign"


def manifest(path: Path = MANIFEST):
    return load_manifest(path, {"cifar10_lossless": str(CIFAR10_LOSSLESS)})


def run(args: argparse.Namespace) -> None:
    runs = [r for r in manifest(args.manifest) if args.only is None or r.name == args.only]
    if args.only is not None and not runs:
        raise ResnetsError(f"no run named {args.only} in {args.manifest}")
    os.nice(args.nice)
    deadline = time.monotonic() + parse_budget(args.budget)
    if args.parallel > 1:
        return run_parallel(args, [r.name for r in unfinished(runs, args.results)][:args.parallel])
    lock = contextlib.nullcontext() if args.only is not None and args.child else CampaignLock(args.state)
    with lock, StopSignals() as signals:
        for entry in unfinished(runs, args.results):
            budget = Budget(deadline, signals, args.max_steps)
            record = advance(entry, args.state, budget, args.results, args.device, args.compile)
            print(json.dumps({"run": entry.name, **record}), flush=True)
            if budget.over():
                break


def run_parallel(args: argparse.Namespace, names: list[str]) -> None:
    """One child process per run (``--only``), each with the remaining budget; SIGTERM is passed on to them."""
    left = max(1.0, parse_budget(args.budget))
    with CampaignLock(args.state):
        where = ["--state", str(args.state), "--results", str(args.results), "--manifest", str(args.manifest)]
        extra = (["--max-steps",
                  str(args.max_steps)] if args.max_steps else []) + (
            [] if args.compile is None else ["--compile" if args.compile else "--no-compile"])
        env = child_env(args.device, len(names))
        children = [subprocess.Popen([sys.executable, __file__, *where, "run", "--only", name, "--child", "--budget",
                                      f"{left:.0f}s", "--device", args.device, "--nice", "0", *extra], env=env)
                    for name in names]

        def forward(signum, frame):
            for c in children:
                c.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            codes = [c.wait() for c in children]
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for c in children:  # never outlive the campaign
                if c.poll() is None:
                    c.kill()
    if any(codes):
        raise ResnetsError(f"a campaign process failed (exit codes {codes}); its run's state is the last one written")


def child_env(device: str, children: int) -> dict[str, str]:
    """The environment of each of ``children`` campaign processes: on a CPU each gets an equal share of the
    cores this process may use (its threads), so that they do not fight over them; on a GPU, as it is."""
    env = dict(os.environ)
    if resolve_device(device).type == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // children))
    return env


def show_status(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends it quietly, as it does any printing tool
    rows = status(manifest(args.manifest), args.state, args.results)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    pid = running_pid(args.state)
    print(f"campaign {'running as process ' + str(pid) if pid else 'not running'}")
    for r in rows:
        eta = "done" if r["done"] else ("unknown here" if r["eta_s"] is None else f"{r['eta_s'] / 3600:.1f} h here")
        spent = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in r["seconds_by_kind"].items()) or "-"
        extra = f"  test top-1 {r['test_top1']:.2f}%" if r["done"] else ""
        print(f"{r['run']:<22} {r['step']:>6} / {r['total'] or '?':<6} {eta:<14} compute: {spent}{extra}")


def signal_campaign(args: argparse.Namespace) -> None:
    pids = campaign_processes(args.state)
    if not pids:
        raise ResnetsError(f"no campaign is running on {args.state}")
    (stop_campaign if args.command == "pause" else continue_campaign)(args.state, pids)
    print(f"campaign process {pids[0]} {'paused' if args.command == 'pause' else 'resumed'}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, default=MANIFEST)
    p.add_argument("--state", type=Path, default=STATE, help="the state folder (default bench/campaign/state)")
    p.add_argument("--results", type=Path, default=CAMPAIGN_RESULTS)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="advance the unfinished runs within a budget")
    r.add_argument("--budget", default="150m", help="how long to train: 150m, 2h, 90s")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto")
    r.add_argument("--parallel", type=int, default=1, help="runs trained at once, one process each (on a CPU, "
                   "each with an equal share of the cores)")
    r.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train through torch.compile (default: where it pays, as training decides: a CPU with AMX)")
    r.add_argument("--only", help="advance this run only")
    r.add_argument("--max-steps", type=int, help="stop each run after this many steps (a dry run)")
    r.add_argument("--nice", type=int, default=10, help="scheduling priority added (default 10: others first)")
    r.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    s = sub.add_parser("status", help="step / total, compute per machine kind and ETA of each run")
    s.add_argument("--json", action="store_true")
    sub.add_parser("pause", help="SIGSTOP the running campaign (benchmarks do this while they time)")
    sub.add_parser("resume", help="SIGCONT it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        {"run": run, "status": show_status, "pause": signal_campaign, "resume": signal_campaign}[args.command](args)
    except ResnetsError as e:
        print(f"campaign: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
