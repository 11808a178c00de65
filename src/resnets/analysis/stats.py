"""Honest numbers for comparisons: mean ± standard deviation and a 95% confidence interval over seeds, and paired
tests (Student's t and Wilcoxon's signed rank, from scipy.stats) with the effect size, over the random
seeds two settings share. Pairing matters: the same seed gives both settings the same initial data order and
augmentation, so the differences per seed vary far less than the accuracies do."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1)
    ci95: tuple[float, float]  # Student's t interval of the mean


@dataclass
class Paired:
    n: int
    mean_difference: float  # a - b
    t: float
    t_test_p: float
    wilcoxon_p: float | None  # None where every difference is zero
    effect_size: float  # Cohen's d_z: mean difference / standard deviation of the differences


def summarize(values: Sequence[float]) -> Summary:
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ConfigError("no values to summarise")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    if n > 1 and std > 0:
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        return Summary(n, mean, std, (mean - half, mean + half))
    return Summary(n, mean, std, (mean, mean))


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired comparison of ``a`` and ``b`` (the same seeds, in the same order)."""
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ConfigError(f"a paired test needs two equally long lists of at least 2 values, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    d = summarize(diffs)
    if d.std == 0:  # identical differences: no spread to test against
        return Paired(len(a), d.mean, math.inf if d.mean else 0.0, 0.0 if d.mean else 1.0, None,
                      math.inf if d.mean else 0.0)
    t = stats.ttest_rel(a, b)
    wilcoxon = stats.wilcoxon(a, b).pvalue if any(diffs) else None
    return Paired(len(a), d.mean, float(t.statistic), float(t.pvalue), wilcoxon, d.mean / d.std)
