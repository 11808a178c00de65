"""What the benchmark scripts share: where results go and how they are written."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR10_LOSSLESS = SHARED_DATA / "cifar-10-lossless-python.tar.xz"  # the original pixels
CAMPAIGN_STATE = Path(__file__).resolve().parent / "campaign" / "state"


def campaign_paused(state: Path = CAMPAIGN_STATE) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Benchmarks need a quiet machine: the running training campaign is stopped while the block times, and
    continued after. Yields what to record in the result's JSON."""
    from resnets.engine.campaign import campaign_paused as paused

    return paused(state)


def write_result(name: str, record: dict[str, Any], out: str | Path = RESULTS, echo: bool = True) -> Path:
    """Write ``record`` as ``<out>/<name>.json`` (indented, atomically: an interrupted write leaves the earlier
    file) and, with ``echo``, print it."""
    from resnets.files import atomic_write

    path = Path(out) / f"{name}.json"
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    if echo:
        print(text, end="")
    return path
