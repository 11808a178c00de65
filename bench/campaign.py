"""The training campaign: the long runs of bench/campaign.yaml, advanced by every machine that gets a turn.

    python bench/campaign.py run --budget 150m            # resume, train at low priority, write the states
    python bench/campaign.py run --device cuda --parallel 7 --compile --budget 9m   # a GPU: every run at once
    python bench/campaign.py run --parallel 2 --budget 150m   # a CPU: two runs, each on half of the cores
    python bench/campaign.py status                       # step / total, compute per machine kind, ETA here
    python bench/campaign.py pause | resume               # SIGSTOP / SIGCONT the running campaign

This is ``resnets campaign`` with this repository's places: the manifest bench/campaign.yaml, the states in
bench/campaign/state/<run>/ (commit that folder to carry the runs on), finished runs in bench/results/campaign/,
and {cifar10_lossless} the original CIFAR-10 archive. Options before the command (--manifest, --state,
--results) replace those places; the command's own options are those of ``resnets campaign <command> --help``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnets.cli import main as resnets_main

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CAMPAIGN_STATE, CIFAR10_LOSSLESS, RESULTS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=str(HERE / "campaign.yaml"))
    p.add_argument("--state", default=str(CAMPAIGN_STATE), help="the state folder (default bench/campaign/state)")
    p.add_argument("--results", default=str(RESULTS / "campaign"))
    p.add_argument("command", choices=("run", "status", "pause", "resume"))
    p.add_argument("options", nargs=argparse.REMAINDER, help="the command's options")
    args = p.parse_args(argv)
    return resnets_main(["campaign", args.command, args.manifest, "--state", args.state, "--results", args.results,
                         f"--var=cifar10_lossless={CIFAR10_LOSSLESS}", *args.options])


if __name__ == "__main__":
    sys.exit(main())
