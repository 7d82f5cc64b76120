import math
import random

import pytest

from rft.stats import (
    cluster_bootstrap_mean,
    difference_interval,
    mean_interval,
    paired_cluster_bootstrap_difference,
    paired_difference,
    pass_at_k,
    wilson_interval,
)


def test_wilson_interval_on_hand_computed_values():
    low, high = wilson_interval(19, 50)
    assert low == pytest.approx(0.2585, abs=1e-3) and high == pytest.approx(0.5187, abs=1e-3)
    low, high = wilson_interval(0, 30)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.1135, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_unpaired_difference_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 against 48/80, method 10.
    difference, low, high = difference_interval((48, 80), (56, 70))
    assert round(difference, 4) == 0.2 and (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_paired_difference_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:2635, table I (e): 12 both, 9 and 2 discordant, 21 neither.
    before = [True] * 12 + [False] * 9 + [True] * 2 + [False] * 21
    after = [True] * 12 + [True] * 9 + [False] * 2 + [False] * 21
    difference, low, high = paired_difference(before, after)
    assert round(difference, 4) == 0.1591 and (round(low, 4), round(high, 4)) == (0.0112, 0.2954)


def test_pairing_narrows_the_interval_when_the_same_items_stay_right():
    before = [True] * 200 + [False] * 300
    after = [True] * 200 + [True] * 30 + [False] * 270  # 30 problems gained, none lost
    _, paired_low, paired_high = paired_difference(before, after)
    _, low, high = difference_interval((200, 500), (230, 500))
    assert paired_low > 0 > low and paired_high - paired_low < high - low
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(16, 0, 4) == 0.0 and pass_at_k(16, 13, 4) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


def test_cluster_bootstrap_agrees_with_the_normal_interval_for_independent_scores():
    generator = random.Random(4)
    scores = [generator.gauss(0.3, 1.0) for _ in range(400)]
    mean, low, high = cluster_bootstrap_mean([[score] for score in scores])
    normal_mean, normal_low, normal_high = mean_interval(scores)
    assert mean == pytest.approx(normal_mean)
    assert high - low == pytest.approx(normal_high - normal_low, rel=0.1)
    assert low < mean < high


def test_cluster_bootstrap_is_wider_when_a_clusters_scores_move_together():
    """Six turns of one game that all score alike carry one game's information, not six turns'."""
    generator = random.Random(5)
    alike = [[generator.gauss(0, 1)] * 6 for _ in range(100)]
    independent = [[generator.gauss(0, 1) for _ in range(6)] for _ in range(100)]
    width = [high - low for _, low, high in map(cluster_bootstrap_mean, (alike, independent))]
    assert width[0] > 2 * width[1]


def test_paired_cluster_difference_cancels_what_the_items_share():
    generator = random.Random(6)
    difficulty = [generator.gauss(0, 2) for _ in range(100)]
    before = [[d + generator.gauss(0, 0.1) for _ in range(6)] for d in difficulty]
    after = [[d + 0.2 + generator.gauss(0, 0.1) for _ in range(6)] for d in difficulty]
    difference, low, high = paired_cluster_bootstrap_difference(before, after)
    assert difference == pytest.approx(0.2, abs=0.02)
    assert 0.15 < low < difference < high < 0.25  # unpaired, the games' spread (2.0) would swamp 0.2
    with pytest.raises(ValueError):
        paired_cluster_bootstrap_difference(before, after[:-1])
