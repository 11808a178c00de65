"""Wall-time measurement: medians after warm-up, contenders timed in turns, device work waited for."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, TypeVar

import torch

K = TypeVar("K", bound=Hashable)  # what names each timed function: a mode, a stage count...


@dataclass
class Timing:
    median_s: float
    p50_s: float
    p99_s: float
    samples: int


def _timing(times: list[float]) -> Timing:
    times = sorted(times)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return Timing(statistics.median(times), statistics.median(times), p99, len(times))


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> Timing:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_interleaved(fns: Mapping[K, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[K, Timing]:
    """Wall time of each function, timed in turns: ``warmup`` untimed calls of each, then ``repeats``
    rounds of one timed call of each (in a rotating order). A burst of load from elsewhere on a shared
    machine then slows every contender alike instead of the one that happened to be running."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[K, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {n: _timing(t) for n, t in times.items()}


def synced(fn: Callable[[], object], device: torch.device | str) -> Callable[[], None]:
    """``fn`` followed by waiting for the device, so that wall time covers the work itself (CUDA is asynchronous)."""
    if torch.device(device).type != "cuda":
        return fn  # type: ignore[return-value]

    def run() -> None:
        fn()
        torch.cuda.synchronize()

    return run
