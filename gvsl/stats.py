"""Intervals for the report: bootstraps over seeds crossed with evaluation cases or the subjects they pair.

Seeds (runs) and cases are crossed: every run is scored on the same cases. Both factors are resampled
independently, as multinomial weights, so one replicate is a weighted recomputation of the statistic.
(SciPy's ``bootstrap`` resamples one axis of paired samples, not crossed or clustered factors.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["crossed_bootstrap_interval", "paired_gain_interval", "weighted_auc", "weighted_mean_dice"]


def crossed_bootstrap_interval(values: np.ndarray, pair_subjects: Sequence[tuple[int, int]] | None = None,
                               level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a (seeds, cases) table and its percentile bootstrap interval.

    Seeds and cases are crossed (every seed is evaluated on the same cases), so both are resampled,
    independently, as multinomial weights: each replicate draws seeds with replacement and cases with
    replacement and takes the weighted mean of the table. When each case is a pair of subjects
    (``pair_subjects``, e.g. the ordered pairs of a registration), pairs that share a subject are
    not independent, so the subjects are resampled instead and a pair weighs the product of its two
    subjects' counts (a pair of a subject with itself does not exist, so such draws add nothing).

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
    seed_weights = _multinomial(rng, seeds, resamples)
    if pair_subjects is None:
        case_weights = _multinomial(rng, cases, resamples)
    else:
        pairs = np.asarray(pair_subjects, dtype=np.int64)
        if pairs.shape != (cases, 2):
            raise ValueError(f"pair_subjects: expecting {cases} pairs of subject indices, got shape {pairs.shape}")
        subjects = int(pairs.max()) + 1
        counts = _multinomial(rng, subjects, resamples)
        case_weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    drawn = case_weights.sum(axis=1) > 0  # a replicate that drew no pair at all has no mean
    seed_weights, case_weights = seed_weights[drawn], case_weights[drawn]
    replicates = np.einsum("rs,sn,rn->r", seed_weights, table, case_weights) / (
        seed_weights.sum(axis=1) * case_weights.sum(axis=1))
    low, high = _percentiles(replicates, level)
    return float(table.mean()), low, high


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def _multinomial(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) counts of n draws with replacement from n items."""
    return rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)


def weighted_mean_dice(dice: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Table 1's segmentation score under case weights: per class the weighted mean over the cases that
    score it (NaN = class absent from truth and prediction), then the mean over classes scored at all.

    With unit weights this is :func:`gvsl.transfer.evaluate_segmentation`'s ``mean_dice``.

    Args:
        dice: (cases, classes) Dice per case and foreground class, NaN where not scored.
        weights: (replicates, cases) non-negative case weights.

    Returns:
        (replicates,) scores; NaN for a replicate that scores no class.
    """
    scored = ~np.isnan(dice)
    totals = weights @ np.where(scored, dice, 0.0)  # (R, K)
    counts = weights @ scored.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, totals / counts, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates stay NaN
        return np.nanmean(per_class, axis=1)


def weighted_auc(probability: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under case weights (the weighted Mann-Whitney statistic; ties count one half).

    With unit weights this equals MONAI's ``ROCAUCMetric`` (the trapezoidal area under the ROC curve).

    Args:
        probability: (cases,) predicted probabilities; target: (cases,) 0/1.
        weights: (replicates, cases).
    """
    positive, negative = target == 1, target == 0
    p, n = probability[positive], probability[negative]
    wins = (p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])
    wp, wn = weights[:, positive], weights[:, negative]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("rp,pn,rn->r", wp, wins, wn) / (wp.sum(axis=1) * wn.sum(axis=1))


def paired_gain_interval(method: Sequence[np.ndarray], baseline: Sequence[np.ndarray],
                         score: Callable[[np.ndarray, np.ndarray], np.ndarray], strata: np.ndarray | None = None,
                         level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Gain of ``method`` over ``baseline`` (mean over runs of the score difference) with a bootstrap interval.

    Run ``s`` of the method is paired with run ``s`` of the baseline (the same pre-training and
    transfer seeds), and both are scored on the same test cases. Each replicate resamples runs and cases (crossed) and
    recomputes every run's score on the reweighted cases, so the interval carries both the seed
    spread and the finite test set.

    Args:
        method, baseline: per run, a per-case array that ``score`` understands (same length, same cases).
        score: ``score(per_case, weights (R, cases)) -> (R,)``, e.g. :func:`weighted_mean_dice` or a
            partial of :func:`weighted_auc`.
        strata: (cases,) labels; cases are resampled within each stratum (classification: by target,
            so that every replicate holds both classes and its AUC is defined).
        level, resamples, seed: as :func:`crossed_bootstrap_interval`.

    Returns:
        (gain, low, high), the gain computed on the cases as they are. With few runs (the default
        profile has two per cell) the percentile interval understates the spread between seeds.

    Raises:
        ValueError: unpaired or unequal runs, or no run with a defined score difference.
    """
    if len(method) != len(baseline) or not method:
        raise ValueError(f"expecting the same non-zero number of method and baseline runs, got "
                         f"{len(method)} and {len(baseline)}")
    cases = len(method[0])
    if any(len(run) != cases for run in (*method, *baseline)):
        raise ValueError("every run must be scored on the same cases")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(cases)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    case_weights = np.zeros((resamples, cases))
    for members in groups:
        case_weights[:, members] = _multinomial(rng, len(members), resamples)
    run_weights = _multinomial(rng, len(method), resamples)
    unit = np.ones((1, cases))
    differences = np.array([score(m, unit)[0] - score(b, unit)[0] for m, b in zip(method, baseline)])
    if np.isnan(differences).all():
        raise ValueError("no run has a defined score difference")
    # a run whose score is undefined (NaN) is left out, of the observed gain as of every replicate
    observed = np.nanmean(differences)
    gains = np.stack([score(m, case_weights) - score(b, case_weights) for m, b in zip(method, baseline)], axis=1)
    defined = ~np.isnan(gains)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = (np.where(defined, gains, 0.0) * run_weights).sum(axis=1) / (defined * run_weights).sum(axis=1)
    replicates = replicates[np.isfinite(replicates)]
    low, high = _percentiles(replicates, level)
    return float(observed), low, high
