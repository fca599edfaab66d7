"""Intervals for the report: a bootstrap over seeds crossed with evaluation cases."""

from __future__ import annotations

import numpy as np

__all__ = ["crossed_bootstrap_interval"]


def crossed_bootstrap_interval(values: np.ndarray, level: float = 0.95, resamples: int = 4000,
                               seed: int = 0) -> tuple[float, float, float]:
    """Mean of a (seeds, cases) table and its percentile bootstrap interval.

    Seeds and cases are crossed (every seed is evaluated on the same cases), so both are resampled,
    independently: each replicate draws seeds with replacement and cases with replacement and
    averages the selected sub-table. A single seed reduces this to the bootstrap over cases.
    (SciPy's ``bootstrap`` resamples one axis of paired samples, not two crossed factors.)

    Args:
        values: (S, N) array, e.g. a gain per pre-training seed and held-out pair.
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
    rng = np.random.default_rng(seed)
    seeds, cases = table.shape
    rows = rng.integers(0, seeds, size=(resamples, seeds))
    cols = rng.integers(0, cases, size=(resamples, cases))
    replicates = np.array([table[r][:, c].mean() for r, c in zip(rows, cols)])
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(table.mean()), float(low), float(high)
