"""Split policy: the paper's split counts, subject seeds of the generated cohorts, and seeded split assignment.

Splits of real datasets follow the paper's counts (:data:`PAPER_SPLITS`), drawn with a seeded
permutation of the sorted case ids and stored in ``manifest.csv``. A folder with a different number
of cases gets the same proportions, with a warning. Generated cohorts take one disjoint seed per
subject, derived from the base seed (:func:`subject_seed`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from gvsl.data.dataset import SPLITS
from gvsl.errors import GVSLInputError

__all__ = [
    "PAPER_SPLITS",
    "PHANTOM_COUNTS",
    "SUBJECT_SEED_RULE",
    "assign_splits",
    "scale_counts",
    "seeded_subset",
    "select",
    "split_counts",
    "subject_seed",
]

#: (train, val, test) cases in the paper (Sec. 4.1); MSD has no paper split: 60/20/20 %
PAPER_SPLITS = {"SHC": (15, 5, 40), "SAC": (15, 5, 20), "CCC": (1000, 400, 600), "SBM": (40, 20, 43), "MSD": (3, 1, 1)}
#: default (train, val, test) subjects of the generated CPU cohorts
#: (test evaluation is cheap, so the test splits take the paper's sizes where it has them, CCC's scaled;
#: training splits stay small: they drive transfer cost)
PHANTOM_COUNTS = {"pretrain": (48, 0, 0), "SHC": (8, 4, 40), "SAC": (8, 4, 20), "CCC": (24, 12, 48), "SBM": (8, 4, 43)}
# cohort codes for subject seeds: seeds of different cohorts never collide
_COHORT_CODES = {"pretrain": 1, "SHC": 2, "SAC": 3, "CCC": 4, "SBM": 5}
_MAX_SUBJECTS = 10_000
#: :func:`subject_seed` as the generated datasets' ``info.json`` records it
SUBJECT_SEED_RULE = "seed*100000 + cohort*10000 + index"


def subject_seed(base_seed: int, cohort: str, index: int) -> int:
    """Seed of subject ``index`` of ``cohort``: ``base·10⁵ + code·10⁴ + index``, disjoint across cohorts."""
    if base_seed < 0:
        raise GVSLInputError(f"seed must be >= 0, got {base_seed}")
    if not 0 <= index < _MAX_SUBJECTS:
        raise GVSLInputError(f"subjects: at most {_MAX_SUBJECTS} per cohort, got index {index}")
    return base_seed * 10 * _MAX_SUBJECTS + _COHORT_CODES[cohort] * _MAX_SUBJECTS + index


def scale_counts(counts: Sequence[int], total: int, *, what: str) -> tuple[int, ...]:
    """Split ``total`` cases in the proportions of ``counts`` (largest remainder, every used split ≥ 1).

    Returns ``counts`` itself when they add up to ``total``; otherwise warns that the split was scaled.
    """
    counts = tuple(int(c) for c in counts)
    used = [i for i, c in enumerate(counts) if c > 0]
    if total < len(used):
        raise GVSLInputError(f"{what}: {total} cases cannot fill the {len(used)} splits {SPLITS[: len(counts)]}")
    if sum(counts) == total:
        return counts
    exact = np.array(counts, dtype=float) * total / sum(counts)
    scaled = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - scaled), kind="stable")[: total - scaled.sum()]:
        scaled[i] += 1
    for i in used:  # borrow from the largest split so no split is empty
        if scaled[i] == 0:
            scaled[int(np.argmax(scaled))] -= 1
            scaled[i] = 1
    warnings.warn(
        f"{what}: {total} cases instead of the {sum(counts)} of the reference split {counts}; "
        f"using the same proportions: {tuple(int(s) for s in scaled)}",
        stacklevel=3,
    )
    return tuple(int(s) for s in scaled)


def assign_splits(ids: Sequence[str], counts: Sequence[int], seed: int) -> dict[str, str]:
    """Case id -> split, from a seeded permutation of the sorted ids (stable for a given folder and seed)."""
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    names = [name for name, n in zip(SPLITS, counts) for _ in range(n)]
    assert len(names) == len(ordered)
    return {ordered[j]: names[k] for k, j in enumerate(order)}


def seeded_subset(ids: Sequence[str], subjects: int | None, seed: int) -> list[str]:
    """The sorted ``ids``, or a seeded subset of ``subjects`` of them when there are more."""
    ids = sorted(ids)
    if subjects is not None and subjects < len(ids):
        keep = np.random.default_rng(seed).permutation(len(ids))[:subjects]
        ids = sorted(ids[i] for i in keep)
    return ids


def select(ids: Sequence[str], subjects: int | None, seed: int, reference: Sequence[int], what: str) -> dict[str, str]:
    """Case id -> split for the real sources: optional seeded subset, then the (scaled) paper split."""
    ids = seeded_subset(ids, subjects, seed)
    counts = scale_counts(reference, len(ids), what=what)
    return assign_splits(ids, counts, seed)


def split_counts(splits: Mapping[str, str]) -> list[int]:
    """Cases per split, in :data:`~gvsl.data.dataset.SPLITS` order, of a case id -> split mapping."""
    return [sum(s == n for s in splits.values()) for n in SPLITS]
