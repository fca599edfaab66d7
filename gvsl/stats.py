"""Intervals for the report: gains over pre-training seeds and test cases, and Holm's correction across claims.

**What an interval is about.** A Table 1 gain (a method minus scratch, or GVSL minus another method) is the
mean over runs of the paired score difference: run ``s`` of the method and run ``s`` of the baseline share the
pre-training seed and the transfer seed, and both are scored on the same test cases. The interval is about the
*expected* gain: over new pre-training and transfer seeds **and** over new test cases drawn from the cohort. Two
sources of spread enter it, under the random-effects model

    gain(seed s, case c) = true gain + seed effect a_s + case effect b_c + seed × case noise e_sc:

* the seeds: the sample variance of the per-seed gains over S seeds, divided by S (it carries Var a / S and
  Var e / (S N));
* the finite test set, which every seed shares (so the spread between seeds cannot show it): the jackknife
  variance over test cases (leave one case out; classification: within each class) of the seed-averaged
  gain, which carries Var b / N and Var e / (S N). The jackknife goes through the score itself (Dice averaged per
  class, ROC AUC), so it also holds for scores that are not means over cases.

Their sum counts Var e / (S N) twice, a small conservative bias (an unbiased three-term version with its
Satterthwaite degrees of freedom was tried and covered worse when the noise dominates: its degrees of freedom
collapse). The interval is Student's t with the Welch–Satterthwaite degrees of freedom of the two terms.
``tests/test_stats.py`` simulates the model at five seeds and 8, 20 and 40 test cases, seed-, case-, noise-
dominated and balanced, through :func:`gvsl.report.table.gain_interval` itself: coverage 94.0–96.2 % at a nominal
95 % (98.7–99.2 % when the seed × case noise dominates); CCC's AUC at 24 cases 97.4 %. With fewer than
:data:`MIN_SEEDS` seeds there is no interval (the spread between seeds cannot be estimated
well from fewer; a percentile bootstrap over two runs covered 56–85 %).

Seeds are the unit: several transfer runs of one pre-training seed (the paper profile's transfer seeds) are
averaged into that seed's gain first, so they sharpen its gain but do not count as more seeds.

Claims are many tests at once: :func:`holm` corrects their p-values (Holm's step-down, which controls the
family-wise error rate) and :func:`holm_levels` gives each claim the confidence level of its Holm step, so that
a corrected interval excludes 0 exactly when the corrected p-value is below the level's complement.
statsmodels (which has Holm in ``multipletests``) is not a dependency of the kit; ten lines do it here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "MIN_SEEDS",
    "Interval",
    "holm",
    "holm_levels",
    "jackknife_gains",
    "jackknife_scores",
    "paired_gain_interval",
    "seed_case_interval",
    "weighted_auc",
    "weighted_mean_dice",
]

#: the fewest seeds (independent runs of a cell, each with its own pre-training and transfer seed) that give an
#: interval; with fewer, a gain is reported as a mean without interval and no claim rests on it
MIN_SEEDS = 5


@dataclass(frozen=True)
class Interval:
    """A gain over seeds and cases: ``estimate`` with its standard error ``se`` and t degrees of freedom ``df``,
    over ``seeds`` seeds; ``low``/``high`` bound its interval at ``level`` (NaN with fewer than :data:`MIN_SEEDS`
    seeds)."""

    estimate: float
    se: float
    df: float
    seeds: int
    level: float = 0.95

    @property
    def defined(self) -> bool:
        """Enough seeds for an interval (and a p-value)."""
        return self.seeds >= MIN_SEEDS and math.isfinite(self.se)

    def bounds(self, level: float | None = None) -> tuple[float, float]:
        """The two-sided t interval at ``level`` (default: :attr:`level`); NaNs when not :attr:`defined`."""
        level = self.level if level is None else level
        if not self.defined:
            return math.nan, math.nan
        if self.se == 0:
            return self.estimate, self.estimate
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half

    @property
    def low(self) -> float:
        return self.bounds()[0]

    @property
    def high(self) -> float:
        return self.bounds()[1]

    @property
    def p(self) -> float:
        """Two-sided p-value of a zero gain (the t test the interval inverts); NaN when not :attr:`defined`."""
        if not self.defined:
            return math.nan
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        return float(2 * _scipy_stats.t.sf(abs(self.estimate) / self.se, self.df))

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. percent)."""
        return Interval(self.estimate * factor, self.se * abs(factor), self.df, self.seeds, self.level)

    def __iter__(self):  # (estimate, low, high), as the report's tables use it
        return iter((self.estimate, self.low, self.high))


def _jackknife_variance(deleted: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Jackknife variance over the last axis of leave-one-unit-out statistics, stratified by ``groups``."""
    total = np.zeros(deleted.shape[:-1])
    for members in groups:
        n = len(members)
        if n < 2:
            continue
        part = deleted[..., members]
        total = total + (n - 1) / n * ((part - part.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    return total


def seed_case_interval(
    full: np.ndarray, deleted: np.ndarray, groups: Sequence[np.ndarray] | None = None, level: float = 0.95
) -> Interval:
    """The interval of the mean over seeds of a per-seed statistic, from its jackknife over cases.

    Args:
        full: (S,) the statistic of each seed on every case (e.g. its gain).
        deleted: (S, J) the statistic of each seed with unit j of the test set left out (a case; a subject for
            pairs of subjects).
        groups: strata of the J units (the jackknife runs within each); None: one stratum.
        level: coverage of the interval.

    Returns:
        The :class:`Interval` (see the module's docstring for the variance and its degrees of freedom); without
        bounds with fewer than :data:`MIN_SEEDS` seeds or when leaving a unit out leaves nothing to score.
    """
    full = np.asarray(full, dtype=np.float64)
    deleted = np.asarray(deleted, dtype=np.float64)
    if full.ndim != 1 or not len(full) or deleted.shape[0] != len(full):
        raise ValueError(f"expecting (S,) and (S, J) statistics, got shapes {full.shape} and {deleted.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not np.isfinite(full).all():
        raise ValueError("a seed's statistic is NaN or Inf")
    seeds = len(full)
    estimate = float(full.mean())
    groups = [np.arange(deleted.shape[1])] if groups is None else [np.asarray(g) for g in groups]
    if seeds < MIN_SEEDS:
        return Interval(estimate, math.nan, math.nan, seeds, level)
    scored = [g for g in groups if len(g) > 1]  # a stratum of one case has no spread to estimate
    if any(not np.isfinite(deleted[:, g]).all() for g in scored):  # a unit whose removal leaves no score
        return Interval(estimate, math.nan, math.nan, seeds, level)
    seed_variance = float(full.var(ddof=1)) / seeds
    case_variance = float(_jackknife_variance(deleted.mean(axis=0), scored))
    case_df = sum(len(g) - 1 for g in scored)
    variance = seed_variance + case_variance
    if variance <= 0:
        return Interval(estimate, 0.0, math.inf, seeds, level)
    terms = seed_variance**2 / (seeds - 1) + (case_variance**2 / case_df if case_df else 0.0)
    return Interval(estimate, math.sqrt(variance), variance**2 / terms, seeds, level)


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


def jackknife_gains(
    method: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    seeds: Sequence[int] | None = None,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per seed, the gain on every test case and with each case left out.

    Args:
        method, baseline: per run, a per-case array that ``score`` understands (same length, same cases); run
            ``i`` of the method is paired with run ``i`` of the baseline.
        score: ``score(per_case, weights (R, cases)) -> (R,)``, e.g. :func:`weighted_mean_dice` or a
            partial of :func:`weighted_auc`.
        seeds: the pre-training seed of each pair of runs; the pairs of one seed are averaged into its gain
            (None: every pair is its own seed).

    Returns:
        the seeds (sorted), ``full`` (S,) and ``deleted`` (S, cases) in their order. A run whose score is undefined
        (NaN)
        is left out; a seed left with no run is dropped.

    Raises:
        ValueError: unpaired or unequal runs, or no run with a defined gain.
    """
    if len(method) != len(baseline) or not method:
        raise ValueError(
            f"expecting the same non-zero number of method and baseline runs, got {len(method)} and {len(baseline)}"
        )
    cases = len(method[0])
    if any(len(run) != cases for run in (*method, *baseline)):
        raise ValueError("every run must be scored on the same cases")
    seeds = list(range(len(method))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(method):
        raise ValueError(f"expecting one seed per pair of runs, got {len(seeds)} for {len(method)}")
    weights = _leave_one_out_weights(cases)
    gains = np.stack([score(m, weights) - score(b, weights) for m, b in zip(method, baseline)])  # (runs, 1 + N)
    return _per_seed(gains, seeds, "no run has a defined score difference")


def jackknife_scores(
    runs: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    seeds: Sequence[int] | None = None,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per seed, the score of one setting's runs on every test case and with each case left out: what
    :func:`jackknife_gains` gives for a gain, for the setting's own score (its interval by
    :func:`seed_case_interval`).

    Raises:
        ValueError: runs of unequal length, or none with a defined score.
    """
    if not runs or any(len(run) != len(runs[0]) for run in runs):
        raise ValueError("expecting runs scored on the same cases")
    seeds = list(range(len(runs))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(runs):
        raise ValueError(f"expecting one seed per run, got {len(seeds)} for {len(runs)}")
    weights = _leave_one_out_weights(len(runs[0]))
    return _per_seed(np.stack([score(run, weights) for run in runs]), seeds, "no run has a defined score")


def _leave_one_out_weights(cases: int) -> np.ndarray:
    """Row 0 weighs every case; row 1 + j every case but j."""
    return np.vstack([np.ones((1, cases)), 1.0 - np.eye(cases)])


def _per_seed(values: np.ndarray, seeds: Sequence[int], none: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(runs, 1 + N) statistics averaged over the runs of each seed, runs without a defined one left out."""
    labels, full, deleted = [], [], []
    for seed in sorted(set(seeds)):
        rows = values[[i for i, s in enumerate(seeds) if s == seed]]
        rows = rows[np.isfinite(rows[:, 0])]
        if len(rows):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                labels.append(seed)
                full.append(rows[:, 0].mean())
                deleted.append(np.nanmean(rows[:, 1:], axis=0))  # a case whose removal unscored a run: the others
    if not full:
        raise ValueError(none)
    return labels, np.array(full), np.array(deleted)


def paired_gain_interval(
    method: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    strata: np.ndarray | None = None,
    seeds: Sequence[int] | None = None,
    level: float = 0.95,
) -> Interval:
    """Gain of ``method`` over ``baseline`` (mean over seeds of the paired score difference) and its interval.

    Args:
        method, baseline, score, seeds: as :func:`jackknife_gains`.
        strata: (cases,) labels; the jackknife runs within each stratum (classification: by target).
        level: coverage of the interval.

    Returns:
        The :class:`Interval` (:func:`seed_case_interval`): no bounds with fewer than :data:`MIN_SEEDS` seeds.
    """
    _, full, deleted = jackknife_gains(method, baseline, score, seeds)
    groups = None if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    return seed_case_interval(full, deleted, groups, level)


def subject_deletion(values: np.ndarray, pair_subjects: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the mean over pairs of subjects and the means with each subject's pairs left out.

    Pairs that share a subject are not independent (e.g. the ordered pairs of a registration), so the unit of
    the jackknife is the subject: leaving one out removes every pair it is in.

    Args:
        values: (S, pairs), e.g. a registration gain per pre-training seed and held-out pair.
        pair_subjects: for each pair, the indices of its two subjects.

    Returns:
        ``full`` (S,) and ``deleted`` (S, subjects) for :func:`seed_case_interval`; a subject whose removal
        leaves no pair gives NaN.
    """
    table = np.asarray(values, dtype=np.float64)
    pairs = np.asarray(pair_subjects, dtype=np.int64)
    if table.ndim != 2 or min(table.shape) < 1:
        raise ValueError(f"expecting a non-empty (seeds, pairs) table, got shape {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("the table holds NaN or Inf")
    if pairs.shape != (table.shape[1], 2):
        raise ValueError(f"pair_subjects: expecting {table.shape[1]} pairs of subject indices, got shape {pairs.shape}")
    subjects = np.unique(pairs)
    kept = np.stack([(pairs != s).all(axis=1) for s in subjects]).astype(np.float64)  # (subjects, pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        deleted = table @ kept.T / kept.sum(axis=1)
    return table.mean(axis=1), deleted


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test).

    The i-th smallest of m p-values is multiplied by m − i + 1, and the adjusted values are made
    non-decreasing in that order, capped at 1 (Holm 1979).
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def holm_levels(p: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Per test, the confidence level of its corrected interval, consistent with :func:`holm` at ``alpha``.

    The test of rank i (ascending p, m tests) gets 1 − alpha / (m − i + 1), the level at which Holm's
    step i tests it; once a step fails to reject, every later test keeps that failed step's level. Hence
    a corrected interval excludes 0 exactly when the Holm-adjusted p-value is below ``alpha``. NaN p: NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, stopped = len(order), None
    for rank, index in enumerate(order):
        step = alpha / (m - rank)
        if stopped is None and p[index] >= step:
            stopped = step
        out[index] = 1 - (step if stopped is None else stopped)
    return out
