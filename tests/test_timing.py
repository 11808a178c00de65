"""Wall-time measurement helpers."""
from resnets.timing import time_calls, time_interleaved


def test_time_calls_orders_its_statistics():
    t = time_calls(lambda: sum(range(1000)), repeats=9, warmup=1)
    assert t.samples == 9 and 0 < t.p50_s <= t.p99_s


def test_time_interleaved_takes_turns():
    calls = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then rotating rounds
    assert {k: t.samples for k, t in timings.items()} == {"a": 3, "b": 3}


def test_time_interleaved_keeps_any_kind_of_name():
    timings = time_interleaved({0: lambda: None, 2: lambda: None}, repeats=2, warmup=0)
    assert sorted(timings) == [0, 2] and all(t.samples == 2 for t in timings.values())
