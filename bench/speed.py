"""The speed suite (the same as `resnets bench`): inference and training modes against the naive baseline,
the machine's matmul peak, and gradient-checkpointing memory.

    python bench/speed.py              # writes bench/results/bench.json
    python bench/speed.py --no-compile # leaves out the torch.compile modes
    python bench/speed.py --device cuda --out bench/results/h100/bench.json   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnets.benchmark import run_bench
from resnets.files import atomic_write

OUT = Path(__file__).resolve().parent / "results" / "bench.json"
sys.path.insert(0, str(OUT.parents[1]))
from common import campaign_paused  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    with campaign_paused() as quiet:  # a running training campaign waits while the suite times
        report = run_bench(compile=not args.no_compile, device=args.device)
    text = json.dumps({**json.loads(report.to_json()), **quiet}, indent=2)
    atomic_write(Path(args.out), lambda f: f.write(text.encode() + b"\n"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
