"""Label-efficiency curves: each method's transfer score against the fraction of labelled training cases.

Whether pre-training pays at the number of labels a user has: every protocol whose settings list more than one
fraction (``transfer.<protocol>.fractions``) has, per method and task, one cell per fraction, each trained on
a nested, seeded subset of the labelled cases (:func:`gvsl.transfer.cases.label_subset`), validated and tested
on every case. Intervals are Table 1's: over pre-training seeds and test cases (:func:`gvsl.stats.seed_case_interval`),
without bounds with fewer than :data:`gvsl.stats.MIN_SEEDS` seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from gvsl.methods import METHOD_TITLES, SCRATCH
from gvsl.report.table import _per_case, _score, gain_interval
from gvsl.table1 import METHODS, PROTOCOLS, TASKS

__all__ = ["LABEL_EFFICIENCY_COLUMNS", "figure_label_efficiency", "label_efficiency", "value_interval"]

#: the columns of ``results/label_efficiency.csv``; values, bounds and gains in percent
LABEL_EFFICIENCY_COLUMNS = [
    "method",
    "task",
    "protocol",
    "fraction",
    "value",
    "low",
    "high",
    "n_runs",
    "labelled_cases",
    "gain",
    "gain_low",
    "gain_high",
]


def value_interval(record: Mapping[str, Any], level: float = 0.95) -> tuple[float, float, float]:
    """A cell's mean test score with its interval over pre-training seeds and test cases (fractions)."""
    from gvsl.stats import jackknife_scores, seed_case_interval

    metric = record["metric"]
    score, strata = _score(record["per_case"][0], metric)
    _, full, deleted = jackknife_scores(
        [_per_case(case, metric) for case in record["per_case"]], score, [run[0] for run in record["runs"]]
    )
    groups = None if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    interval = seed_case_interval(full, deleted, groups, level)
    return interval.estimate, interval.low, interval.high


def label_efficiency(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, task, protocol, fraction) of the protocols run at several fractions, columns
    :data:`LABEL_EFFICIENCY_COLUMNS`; ``summaries`` from :func:`gvsl.report.load_summaries` with
    ``label_fractions=True``. ``gain`` is the paired gain over scratch's runs at the same fraction."""
    rows = []
    for (method, task, protocol), cells in summaries.groupby(["method", "task", "protocol"]):
        if cells["fraction"].nunique() < 2:
            continue
        for _, record in cells.sort_values("fraction").iterrows():
            value, low, high = value_interval(record)
            scratch = summaries[
                (summaries["method"] == SCRATCH)
                & (summaries["task"] == task)
                & (summaries["protocol"] == protocol)
                & (summaries["fraction"] == record["fraction"])
            ]
            gain = None if method == SCRATCH or scratch.empty else gain_interval(record, scratch.iloc[0])
            gain = (math.nan,) * 3 if gain is None else tuple(gain)
            counts = [len(cases) for cases in record.get("train_cases") or [] if cases is not None]
            rows.append(
                {
                    "method": method,
                    "task": task,
                    "protocol": protocol,
                    "fraction": float(record["fraction"]),
                    "value": 100.0 * value,
                    "low": 100.0 * low,
                    "high": 100.0 * high,
                    "n_runs": int(record["n_runs"]),
                    "labelled_cases": int(np.median(counts)) if counts else pd.NA,
                    "gain": 100.0 * gain[0],
                    "gain_low": 100.0 * gain[1],
                    "gain_high": 100.0 * gain[2],
                }
            )
    table = pd.DataFrame(rows, columns=LABEL_EFFICIENCY_COLUMNS)
    order = {"method": METHODS, "task": TASKS, "protocol": PROTOCOLS}
    keys = [table[column].map(lambda v, names=names: names.index(v)) for column, names in order.items()]
    return (
        table.assign(_m=keys[0], _t=keys[1], _p=keys[2])
        .sort_values(["_t", "_p", "_m", "fraction"])
        .drop(columns=["_m", "_t", "_p"])
        .reset_index(drop=True)
    )


def figure_label_efficiency(table: pd.DataFrame) -> plt.Figure:
    """Score against the fraction of labelled training cases, a panel per task and protocol, a line per method,
    its interval as a band where it has one."""
    panels = list(dict.fromkeys(zip(table["protocol"], table["task"]))) or [("linear", "SHC")]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    for ax, (protocol, task) in zip(axes.flat, panels):
        panel = table[(table["protocol"] == protocol) & (table["task"] == task)]
        for method, curve in panel.groupby("method", sort=False):
            line = ax.plot(curve["fraction"], curve["value"], marker="o", label=METHOD_TITLES.get(method, method))
            if curve[["low", "high"]].notna().all().all():
                ax.fill_between(curve["fraction"], curve["low"], curve["high"], alpha=0.15, color=line[0].get_color())
        cases = panel.drop_duplicates("fraction")
        ax.set_xscale("log", base=2)
        ax.set_xticks(cases["fraction"], [f"{f:g}\n({c})" for f, c in zip(cases["fraction"], cases["labelled_cases"])])
        ax.set_title(f"{task}, {protocol}")
        ax.set_xlabel("fraction of labelled cases (cases)")
        ax.set_ylabel("test AUC (%)" if task == "CCC" else "test Dice (%)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if len(table):
        axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    return figure
