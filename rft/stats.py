"""The statistics the evaluations report: intervals for a rate and for a difference, and pass@k.

Every learning result the project publishes is a rate on held-out items; a rate without its
interval cannot say whether a run helped, so these are used wherever a rate is shown.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z_95 = 1.959964


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sound at 0 and at few trials, unlike the normal one)."""
    if trials == 0:
        return math.nan, math.nan
    rate = successes / trials
    margin = Z_95 * math.sqrt(rate * (1 - rate) / trials + Z_95**2 / (4 * trials**2))
    centre = rate + Z_95**2 / (2 * trials)
    scale = 1 + Z_95**2 / trials
    return (centre - margin) / scale, (centre + margin) / scale


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% normal interval of a mean of many scores (a reward averaged over
    held-out rows). For 0/1 scores use wilson_interval, which stays sound at 0, 1 and few rows."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, math.nan, math.nan
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    margin = Z_95 * math.sqrt(variance / len(values))
    return mean, mean - margin, mean + margin


def difference_interval(before: tuple[int, int], after: tuple[int, int], phi: float = 0.0) -> tuple[float, float, float]:
    """(after rate - before rate, low, high): the 95% interval of a difference of two proportions,
    each given as (successes, trials), by Newcombe's hybrid score method (Wilson intervals of
    the two rates combined); `phi` is the correlation of paired outcomes, 0 for independent samples.
    It stays inside [-1, 1] and is sound when few items change.
    """
    (s_before, n_before), (s_after, n_after) = before, after
    rate_before, rate_after = s_before / n_before, s_after / n_after
    low_before, high_before = wilson_interval(s_before, n_before)
    low_after, high_after = wilson_interval(s_after, n_after)
    difference = rate_after - rate_before
    down = math.sqrt(max(0.0, (rate_after - low_after) ** 2 + (high_before - rate_before) ** 2
                         - 2 * phi * (rate_after - low_after) * (high_before - rate_before)))
    up = math.sqrt(max(0.0, (high_after - rate_after) ** 2 + (rate_before - low_before) ** 2
                       - 2 * phi * (high_after - rate_after) * (rate_before - low_before)))
    return difference, difference - down, difference + up


def paired_difference(before: Sequence[bool], after: Sequence[bool]) -> tuple[float, float, float]:
    """(after rate - before rate, low, high) for the same items scored twice (Newcombe's method 10).

    Pairing matters: two models scored on the same 500 problems share most of their noise (the
    problems' difficulty), so the difference is more certain than two separate intervals suggest.
    """
    if len(before) != len(after) or not before:
        raise ValueError("paired_difference needs the same, non-empty list of items scored twice")
    n = len(before)
    both = sum(b and a for b, a in zip(before, after))
    only_after = sum(a and not b for b, a in zip(before, after))
    only_before = sum(b and not a for b, a in zip(before, after))
    neither = n - both - only_after - only_before
    margins = (both + only_before) * (neither + only_after) * (both + only_after) * (neither + only_before)
    cross = both * neither - only_after * only_before
    # Newcombe's continuity correction of a positive correlation: it keeps the interval from being too narrow.
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = 0.0 if margins == 0 else corrected / math.sqrt(margins)
    return difference_interval((both + only_before, n), (both + only_after, n), phi)


def cluster_bootstrap_mean(clusters: Sequence[Sequence[float]], resamples: int = 4000,
                           seed: int = 0) -> tuple[float, float, float]:
    """(mean of every value, low, high): the 95% percentile-bootstrap interval that resamples whole
    clusters, for scores that are not independent within a cluster (the turns of one Wordle game)."""
    mean = _pooled_mean(clusters, range(len(clusters)))
    return mean, *_bootstrap_interval(len(clusters), resamples, seed, lambda picked: _pooled_mean(clusters, picked))


def paired_cluster_bootstrap_difference(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]],
                                        resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """(after's mean - before's, low, high) for clusters paired by position (the same secret played by
    two checkpoints): each resample picks the same clusters from both, so what the items share cancels."""
    if len(before) != len(after) or not before:
        raise ValueError("paired_cluster_bootstrap_difference needs the same, non-empty list of clusters twice")
    every = range(len(before))
    difference = _pooled_mean(after, every) - _pooled_mean(before, every)
    return difference, *_bootstrap_interval(len(before), resamples, seed,
                                            lambda picked: _pooled_mean(after, picked) - _pooled_mean(before, picked))


def _pooled_mean(clusters: Sequence[Sequence[float]], picked) -> float:
    values = [value for index in picked for value in clusters[index]]
    return sum(values) / len(values) if values else math.nan


def _bootstrap_interval(count: int, resamples: int, seed: int, statistic) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of `statistic` over `resamples` draws of `count` cluster indices."""
    generator = random.Random(seed)
    draws = sorted(statistic([generator.randrange(count) for _ in range(count)]) for _ in range(resamples))
    return draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """The chance that at least one of k samples is correct, estimated without bias from `samples`
    draws of which `correct` were right (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= samples:
        raise ValueError(f"pass@{k} needs at least {k} samples per item, got {samples}")
    if samples - correct < k:
        return 1.0
    return 1.0 - math.comb(samples - correct, k) / math.comb(samples, k)
