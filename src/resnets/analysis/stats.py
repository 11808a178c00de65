"""Honest numbers for comparisons: mean ± standard deviation and a 95% confidence interval over seeds, and paired
tests (Student's t and Wilcoxon's signed rank, from scipy.stats) with the effect size, over the random
seeds two settings share. Pairing matters: the same seed gives both settings the same initial data order and
augmentation, so the differences per seed vary far less than the accuracies do.

Two trained networks scored on the same images pair by image instead (``paired_accuracy``): the difference in
top-1 with its 95% interval and McNemar's exact test, from the images that only one of them gets right."""
from __future__ import annotations

import math
from collections import Counter
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


@dataclass
class PairedAccuracy:
    """Two classifiers on the same images: how sure those images make the difference between them (not how it
    varies from one training seed to the next: for that, train seeds and use ``paired``)."""

    n: int
    top1_a: float  # %
    top1_b: float  # %
    difference: float  # points, b - a
    ci95: tuple[float, float]  # points: the Wald interval of a difference of paired proportions
    both: int  # images both get right
    only_a: int
    only_b: int
    neither: int
    mcnemar_p: float  # exact two-sided: the discordant images as a fair coin's tosses


def paired_accuracy(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedAccuracy:
    """Compare two classifiers' right/wrong answers on the same images (in the same order)."""
    from scipy import stats

    n = len(correct_a)
    if n != len(correct_b) or n == 0:
        raise ConfigError(f"a paired comparison needs the same images for both, got {len(correct_a)} and "
                          f"{len(correct_b)} answers")
    pairs = Counter((bool(a), bool(b)) for a, b in zip(correct_a, correct_b))
    both, only_a, only_b, neither = pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False]
    diff = (only_b - only_a) / n
    se = math.sqrt(max(only_a + only_b - (only_b - only_a) ** 2 / n, 0.0)) / n
    half = stats.norm.ppf(0.975) * se
    discordant = only_a + only_b
    p = float(stats.binomtest(min(only_a, only_b), discordant, 0.5).pvalue) if discordant else 1.0
    return PairedAccuracy(n, 100.0 * (both + only_a) / n, 100.0 * (both + only_b) / n, 100.0 * diff,
                          (100.0 * (diff - half), 100.0 * (diff + half)), both, only_a, only_b, neither, p)
