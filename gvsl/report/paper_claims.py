"""The paper's claims, each tested per task against a criterion fixed in advance, corrected for multiplicity."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gvsl.methods import BASELINES, SCRATCH
from gvsl.report.table import _setting, paired_gains
from gvsl.stats import MIN_SEEDS, Interval, holm, holm_levels, seed_case_interval
from gvsl.table1 import ABLATIONS, METHOD_NAMES, TASKS

# compared with whole GVSL by :func:`claims`: every baseline and every ablation
_COMPARED = (*BASELINES, *ABLATIONS)
#: the family-wise error rate of the report's claims (Holm), and the level of the uncorrected intervals
ALPHA = 0.05
CLAIMS_COLUMNS = [
    "claim",
    "task",
    "estimate",
    "low",
    "high",
    "seeds",
    "p",
    "p_holm",
    "level_adj",
    "low_adj",
    "high_adj",
    "converged",
    "tested",
    "shown",
    "note",
]
FINETUNE_CLAIM = "fine-tune gains are small (below the linear gain)"


def claims(table: pd.DataFrame, summaries: pd.DataFrame, finetune_claims: bool = True) -> pd.DataFrame:
    """Whether this run shows each of the paper's claims, per task, with the interval it rests on.

    Every claim is one paired difference, per pre-training seed, over the same test cases (its interval:
    :func:`gvsl.stats.seed_case_interval`, over seeds and test cases):

    1. *GVSL beats scratch on linear probes*: whole GVSL's linear gain over scratch.
    2. *Whole GVSL beats each baseline and each ablation* (linear): GVSL minus the other method, paired
       by seed like the gains over scratch.
    3. *Fine-tune gains are small*: GVSL's linear gain over scratch minus its fine-tune gain over scratch, per
       seed (both on the task's test cases).

    A claim is **shown** when its interval, corrected for multiplicity across every tested claim of the report
    (Holm's step-down at family-wise :data:`ALPHA`; ``p_holm`` < ALPHA), lies above 0. ``low``/``high`` is the
    uncorrected 95 % interval, ``low_adj``/``high_adj`` the corrected one (its level ``level_adj`` is that of
    the claim's Holm step, :func:`gvsl.stats.holm_levels`), ``p`` the two-sided p-value of a zero difference.
    A claim with fewer than :data:`gvsl.stats.MIN_SEEDS` pre-training seeds, or a fine-tune claim when
    ``finetune_claims`` is false (its cells are a fixed budget rather than converged runs, say), is not tested:
    it has an estimate, no interval, never counts in the correction and is never shown (``note`` says why).

    ``estimate`` and the bounds are percent. ``converged``: every cell compared plateaued; a claim resting on
    unconverged cells is weaker evidence either way. Rows whose cells were not run are left out. The
    criteria are fixed here, not tuned to any outcome.
    """
    rows = []
    lookup = {(r.method, r.protocol, r.task): r for r in table.itertuples()}
    for task in TASKS:
        cell = {
            (method, protocol): _setting(summaries, method, protocol, task)
            for method in ("gvsl", SCRATCH, *_COMPARED)
            for protocol in ("linear", "finetune")
        }
        linear, scratch = lookup.get(("gvsl", "linear", task)), lookup.get((SCRATCH, "linear", task))
        linear_gain = _gains(cell[("gvsl", "linear")], cell[(SCRATCH, "linear")])
        if linear_gain is not None and linear is not None and scratch is not None:
            rows.append(
                _claim(
                    "GVSL beats scratch on linear probes",
                    task,
                    _interval(linear_gain),
                    linear.converged and scratch.converged,
                )
            )
        for other_method in _COMPARED:
            other = lookup.get((other_method, "linear", task))
            gain = _gains(cell[("gvsl", "linear")], cell[(other_method, "linear")])
            if gain is not None and linear is not None and other is not None:
                rows.append(
                    _claim(
                        f"whole GVSL beats {METHOD_NAMES[other_method]} (linear)",
                        task,
                        _interval(gain),
                        linear.converged and other.converged,
                    )
                )
        finetune_gain = _gains(cell[("gvsl", "finetune")], cell[(SCRATCH, "finetune")])
        if linear_gain is not None and finetune_gain is not None:
            cells = [lookup.get((m, p, task)) for m in ("gvsl", SCRATCH) for p in ("linear", "finetune")]
            difference = _difference(linear_gain, finetune_gain)
            rows.append(
                _claim(
                    FINETUNE_CLAIM,
                    task,
                    difference,
                    all(r is not None and r.converged for r in cells),
                    None if finetune_claims else "not tested: report.finetune_claims is false",
                )
            )
    intervals = [row.pop("interval", None) for row in rows]
    found = pd.DataFrame(rows, columns=CLAIMS_COLUMNS)
    p = np.array([row["p"] if row["tested"] else math.nan for row in rows], dtype=np.float64)
    found["p_holm"], found["level_adj"] = holm(p), holm_levels(p, ALPHA)
    adjusted = [
        interval.bounds(level) if row["tested"] else (math.nan, math.nan)
        for row, interval, level in zip(rows, intervals, found["level_adj"])
    ]
    found["low_adj"] = [low for low, _ in adjusted]
    found["high_adj"] = [high for _, high in adjusted]
    # the corrected interval lies above 0 exactly when p_holm < ALPHA and the estimate is positive
    found["shown"] = found["tested"].astype(bool) & (found["p_holm"] < ALPHA) & (found["low_adj"] > 0)
    return found


_Gains = tuple[list[int], np.ndarray, np.ndarray, Any]


def _gains(method: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None) -> _Gains | None:
    return None if method is None or baseline is None else paired_gains(method, baseline)


def _interval(gains: _Gains) -> Interval:
    _, full, deleted, groups = gains
    return seed_case_interval(full, deleted, groups).scaled(100.0)


def _difference(first: _Gains, second: _Gains) -> Interval | None:
    """The interval of ``first`` − ``second`` over the pre-training seeds both have (same test cases)."""
    seeds = sorted(set(first[0]) & set(second[0]))
    if not seeds or first[2].shape[1] != second[2].shape[1]:
        return None
    a = [first[0].index(s) for s in seeds]
    b = [second[0].index(s) for s in seeds]
    return seed_case_interval(first[1][a] - second[1][b], first[2][a] - second[2][b], first[3]).scaled(100.0)


def _claim(
    claim: str, task: str, interval: Interval | None, converged: bool, untested: str | None = None
) -> dict[str, Any]:
    if interval is None:
        return {
            "claim": claim,
            "task": task,
            "estimate": math.nan,
            "low": math.nan,
            "high": math.nan,
            "seeds": 0,
            "p": math.nan,
            "converged": bool(converged),
            "tested": False,
            "shown": False,
            "note": "not tested: linear and fine-tune runs share no seed",
        }
    note = untested or (
        "" if interval.defined else f"not tested: {interval.seeds} pre-training seed(s), fewer than {MIN_SEEDS}"
    )
    return {
        "claim": claim,
        "task": task,
        "estimate": interval.estimate,
        "low": interval.low,
        "high": interval.high,
        "seeds": interval.seeds,
        "p": interval.p,
        "low_adj": math.nan,
        "high_adj": math.nan,
        "converged": bool(converged),
        "tested": not note,
        "shown": False,
        "note": note,
        "interval": interval,
    }


def _bounds(low: float, high: float) -> str:
    return "no interval" if math.isnan(low) else f"[{low:+.1f}, {high:+.1f}]"


def claims_markdown(found: pd.DataFrame) -> str:
    """The claims as a Markdown table: estimate, its 95 % interval and the Holm-corrected one (points), the
    corrected p-value, shown or not shown (or why it was not tested)."""
    lines = [
        "| claim | task | estimate [95 % CI] | Holm-corrected CI (level) | p (Holm) | cells converged | shown |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in found.itertuples():
        corrected = f"{_bounds(row.low_adj, row.high_adj)} ({100 * row.level_adj:.2f} %)" if row.tested else "–"
        p = ("< 0.001" if row.p_holm < 0.001 else f"{row.p_holm:.3f}") if row.tested else "–"
        verdict = "**shown**" if row.shown else ("not shown" if row.tested else row.note)
        lines.append(
            f"| {row.claim} | {row.task} | {row.estimate:+.1f} {_bounds(row.low, row.high)} | {corrected} | "
            f"{p} | {'yes' if row.converged else 'no'} | {verdict} |"
        )
    notes = [
        "",
        f"Shown: the claim's interval, corrected by Holm's method across the {int(found['tested'].sum())} "
        f"tested claims (family-wise error {100 * ALPHA:.0f} %), lies above 0. Intervals are Student t over "
        f"pre-training seeds and test cases; a claim needs at least {MIN_SEEDS} pre-training seeds. The fine-tune "
        "claim tests the linear gain minus the fine-tune gain, per seed.",
    ]
    return "\n".join([*lines, *notes]) + "\n"
