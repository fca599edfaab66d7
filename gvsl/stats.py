"""Intervals for the report: a bootstrap over seeds crossed with evaluation cases or the subjects they pair."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["crossed_bootstrap_interval"]


def crossed_bootstrap_interval(values: np.ndarray, pair_subjects: Sequence[tuple[int, int]] | None = None,
                               level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a (seeds, cases) table and its percentile bootstrap interval.

    Seeds and cases are crossed (every seed is evaluated on the same cases), so both are resampled,
    independently, as multinomial weights: each replicate draws seeds with replacement and cases with
    replacement and takes the weighted mean of the table. When each case is a pair of subjects
    (``pair_subjects``, e.g. the ordered pairs of a registration), pairs that share a subject are
    not independent, so the subjects are resampled instead and a pair weighs the product of its two
    subjects' counts (a pair of a subject with itself does not exist, so such draws add nothing).
    (SciPy's ``bootstrap`` resamples one axis of paired samples, not crossed or clustered factors.)

    Args:
        values: (S, N) array, e.g. a gain per pre-training seed and held-out pair.
        pair_subjects: for each of the N cases, the indices of its two subjects; None: cases are independent.
        level: coverage of the interval.
        resamples: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        (mean, low, high).
    """
    table = np.asarray(values, dtype=np.float64)
    if table.ndim != 2 or min(table.shape) < 1:
        raise ValueError(f"expecting a non-empty (seeds, cases) table, got shape {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("the table holds NaN or Inf")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds, cases = table.shape
    rng = np.random.default_rng(seed)
    seed_weights = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples)
    if pair_subjects is None:
        case_weights = rng.multinomial(cases, np.full(cases, 1 / cases), size=resamples)
    else:
        pairs = np.asarray(pair_subjects, dtype=np.int64)
        if pairs.shape != (cases, 2):
            raise ValueError(f"pair_subjects: expecting {cases} pairs of subject indices, got shape {pairs.shape}")
        subjects = int(pairs.max()) + 1
        counts = rng.multinomial(subjects, np.full(subjects, 1 / subjects), size=resamples)
        case_weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    drawn = case_weights.sum(axis=1) > 0  # a replicate that drew no pair at all has no mean
    seed_weights, case_weights = seed_weights[drawn], case_weights[drawn]
    replicates = np.einsum("rs,sn,rn->r", seed_weights, table, case_weights) / (
        seed_weights.sum(axis=1) * case_weights.sum(axis=1))
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(table.mean()), float(low), float(high)
