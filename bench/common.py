"""What the benchmark scripts share: where results go and how they are written."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterator

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR10_LOSSLESS = SHARED_DATA / "cifar-10-lossless-python.tar.xz"  # the original pixels
CAMPAIGN_STATE = Path(__file__).resolve().parent / "campaign" / "state"


def campaign_processes(state: Path = CAMPAIGN_STATE) -> list[int]:
    """The running training campaign's process and its children (parallel runs, data workers); [] if none."""
    from resnets.engine.campaign import running_pid

    pid = running_pid(state)
    if pid is None:
        return []
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, children)]


def stop_campaign(state: Path, pids: list[int]) -> None:
    """Stop the campaign's processes (SIGSTOP), the pause noted so that its segments leave it out of their time."""
    from resnets.engine.campaign import note_pause

    note_pause(state, begins=True)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def continue_campaign(state: Path, pids: list[int]) -> None:
    """Continue the campaign's processes (SIGCONT; any that ended meanwhile are passed over); note the end."""
    from resnets.engine.campaign import note_pause

    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    note_pause(state, begins=False)


@contextlib.contextmanager
def campaign_paused(state: Path = CAMPAIGN_STATE) -> Iterator[dict[str, Any]]:
    """Benchmarks need a quiet machine: a running training campaign is stopped (SIGSTOP) while the block
    times, and continued after (SIGCONT). Yields what to record in the result's JSON."""
    pids = campaign_processes(state)
    if pids:
        stop_campaign(state, pids)
    try:
        yield {"campaign_paused": bool(pids), "campaign_pid": pids[0] if pids else None}
    finally:
        if pids:
            continue_campaign(state, pids)


def write_result(name: str, record: dict[str, Any], out: str | Path = RESULTS, echo: bool = True) -> Path:
    """Write ``record`` as ``<out>/<name>.json`` (indented) and, with ``echo``, print it."""
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    if echo:
        print(json.dumps(record, indent=2))
    return path
