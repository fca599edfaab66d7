"""The bootstrap interval of the report (gvsl.stats): its mean, its coverage, and clustered pairs."""

import itertools

import numpy as np
import pytest

from gvsl.stats import crossed_bootstrap_interval, paired_gain_interval, weighted_auc, weighted_mean_dice


def test_mean_and_a_constant_table():
    assert crossed_bootstrap_interval(np.full((2, 5), 3.0)) == (3.0, 3.0, 3.0)
    mean, low, high = crossed_bootstrap_interval(np.arange(12.0).reshape(3, 4))
    assert mean == 5.5 and low < mean < high


def test_independent_cases_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        table = rng.normal(1.0, 1.0, size=(1, 40))
        _, low, high = crossed_bootstrap_interval(table, resamples=1000, seed=trial)
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_pairs_sharing_subjects_widen_the_interval_and_cover_the_mean():
    """Gain of pair (i, j) = effect of subject i + effect of subject j: pairs are correlated through subjects."""
    rng = np.random.default_rng(1)
    pairs = list(itertools.permutations(range(6), 2))
    covered, ratio = 0, []
    for trial in range(150):
        effect = rng.normal(0.0, 1.0, size=6)
        table = np.array([[effect[i] + effect[j] + rng.normal(0, 0.1) for i, j in pairs]])
        _, low, high = crossed_bootstrap_interval(table, pairs, resamples=1000, seed=trial)
        _, naive_low, naive_high = crossed_bootstrap_interval(table, resamples=1000, seed=trial)
        covered += low <= 0.0 <= high
        ratio.append((high - low) / (naive_high - naive_low))
    assert np.median(ratio) > 1.5  # treating the 30 pairs as independent would be far too narrow
    assert covered / 150 >= 0.8  # six subjects: the percentile interval is somewhat short, not wildly so


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        crossed_bootstrap_interval(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        crossed_bootstrap_interval(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="pair_subjects"):
        crossed_bootstrap_interval(np.zeros((1, 3)), [(0, 1)])


# ----------------------------------------------------------------------------------------------
# Table 1's gain intervals: scores recomputed under case weights, runs paired with the baseline's


def test_weighted_mean_dice_with_unit_weights_is_the_mean_over_scored_classes():
    dice = np.array([[0.5, np.nan], [0.7, 0.2], [0.9, np.nan]])
    # class 1: mean of 0.5, 0.7, 0.9; class 2: scored in one case only
    assert weighted_mean_dice(dice, np.ones((1, 3)))[0] == pytest.approx((0.7 + 0.2) / 2)
    # integer weights are duplicated cases
    duplicated = np.array([[0.5, np.nan], [0.5, np.nan], [0.7, 0.2], [0.9, np.nan]])
    assert weighted_mean_dice(dice, np.array([[2.0, 1.0, 1.0]]))[0] == pytest.approx(
        weighted_mean_dice(duplicated, np.ones((1, 4)))[0])
    # a replicate that drops the only case scoring class 2 averages class 1 alone
    assert weighted_mean_dice(dice, np.array([[1.0, 0.0, 1.0]]))[0] == pytest.approx(0.7)


def test_weighted_auc_matches_monai_and_duplication():
    import torch
    from monai.metrics import ROCAUCMetric

    rng = np.random.default_rng(0)
    target = np.array([0, 1] * 6)
    probability = np.round(rng.uniform(size=12), 1)  # rounding makes ties
    metric = ROCAUCMetric()
    metric(torch.tensor(probability), torch.tensor(target))
    assert weighted_auc(probability, target, np.ones((1, 12)))[0] == pytest.approx(float(metric.aggregate()))
    weights = rng.integers(0, 3, size=12).astype(float)
    weights[:2] = 1.0  # keep both classes
    repeat = weights.astype(int)
    metric = ROCAUCMetric()
    metric(torch.tensor(np.repeat(probability, repeat)), torch.tensor(np.repeat(target, repeat)))
    assert weighted_auc(probability, target, weights[None])[0] == pytest.approx(float(metric.aggregate()))


def test_paired_gain_is_the_difference_of_means_and_its_interval_covers_the_truth():
    """Per-case Dice = case difficulty + seed effect + a true gain of 0.05 for the method."""
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(100):
        difficulty = rng.normal(0.5, 0.1, size=10)
        seed_effect = rng.normal(0, 0.03, size=(2, 3))  # (method/baseline, runs)
        baseline = [(difficulty + seed_effect[0, s] + rng.normal(0, 0.03, 10))[:, None] for s in range(3)]
        method = [(difficulty + 0.05 + seed_effect[1, s] + rng.normal(0, 0.03, 10))[:, None] for s in range(3)]
        gain, low, high = paired_gain_interval(method, baseline, weighted_mean_dice, resamples=1000, seed=trial)
        assert gain == pytest.approx(np.mean(method) - np.mean(baseline))
        assert low <= gain <= high
        covered += low <= 0.05 <= high
    assert covered >= 75  # three runs: the percentile interval runs somewhat short, not wildly so


def test_stratified_cases_keep_every_auc_replicate_defined():
    target = np.array([0] * 9 + [1])
    method = [np.linspace(0, 1, 10)]
    baseline = [np.linspace(1, 0, 10)]
    score = lambda p, w: weighted_auc(p, target, w)  # noqa: E731
    gain, low, high = paired_gain_interval(method, baseline, score, strata=target, resamples=500)
    assert (gain, low, high) == (1.0, 1.0, 1.0)


def test_unpaired_runs_are_refused():
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_gain_interval([np.zeros((3, 1))], [], weighted_mean_dice)
    with pytest.raises(ValueError, match="same cases"):
        paired_gain_interval([np.zeros((3, 1))], [np.zeros((4, 1))], weighted_mean_dice)
