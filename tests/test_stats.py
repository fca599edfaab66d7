"""The bootstrap interval of the report (gvsl.stats): its mean, its coverage, and clustered pairs."""

import itertools

import numpy as np
import pytest

from gvsl.stats import crossed_bootstrap_interval


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
