"""Table 1: the transfer summaries beside the paper's values (:mod:`gvsl.table1`), gains over scratch with their
intervals, the Markdown table, the DVC metrics and the provenance of every number."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gvsl.errors import GVSLInputError
from gvsl.methods import SCRATCH
from gvsl.stats import MIN_SEEDS, Interval
from gvsl.table1 import METHOD_NAMES, METHODS, PAPER_TABLE1, PROTOCOL_NAMES, PROTOCOLS, TASK_METRICS, TASKS

_SUMMARY_KEYS = {
    "task",
    "protocol",
    "method",
    "metric",
    "seeds",
    "pretrain_seeds",
    "runs",
    "test",
    "mean",
    "sd",
    "n_runs",
    "val_curves",
    "converged",
    "per_case",
    "case_ids",
    "dataset_source",
    "profile",
    "commit",
}
#: Table 1's columns (results/table1.csv)
TABLE1_COLUMNS = [
    "method",
    "protocol",
    "task",
    "metric",
    "value",
    "sd",
    "n_runs",
    "converged",
    "gain",
    "gain_low",
    "gain_high",
    "paper_value",
    "paper_gain",
    "dataset",
    "profile",
]


def cell_overview(summaries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per Table 1 cell of a transfer stage (its ``summary.json`` records): the test metric's mean and
    sd over the runs, whether every run plateaued, and each run's iterations and best iteration."""
    return pd.DataFrame(
        [
            {
                "task": s["task"],
                "protocol": s["protocol"],
                "metric": s["metric"],
                "mean": s["mean"],
                "sd": s["sd"],
                "runs": s["n_runs"],
                "converged": s["converged"],
                "iterations": s["iterations"],
                "best iterations": s["best_iterations"],
            }
            for s in summaries
        ]
    )


def load_summaries(transfer_root: str | Path, label_fractions: bool = False) -> pd.DataFrame:
    """One row per transfer setting, from ``<transfer_root>/<method>/<TASK>-<protocol>/summary.json``: Table 1's
    cells (every labelled case), or with ``label_fractions`` the label-efficiency cells too (column ``fraction``)."""
    root = Path(transfer_root)
    files = sorted(root.glob("*/*/summary.json"))
    if not files:
        raise GVSLInputError(f"{root}: no transfer results (*/*/summary.json); run the transfer stages first")
    rows = []
    for path in files:
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise GVSLInputError(f"{path}: unreadable transfer summary ({error})") from None
        missing = _SUMMARY_KEYS - set(summary) if isinstance(summary, dict) else _SUMMARY_KEYS
        if missing:
            raise GVSLInputError(f"{path}: transfer summary lacks {sorted(missing)}")
        if (summary["method"], summary["protocol"], summary["task"]) not in PAPER_TABLE1:
            raise GVSLInputError(f"{path}: unknown setting {summary['task']}-{summary['protocol']}-{summary['method']}")
        rows.append({"fraction": 1.0, **summary, "path": str(path)})
    found = pd.DataFrame(rows)
    return found if label_fractions else found[found["fraction"] == 1.0].reset_index(drop=True)


def table1(summaries: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Long-format Table 1, one row per setting, columns :data:`TABLE1_COLUMNS`.

    ``value``, ``sd``, the gains and ``paper_value`` are percent. ``value`` is the mean over every run
    (pre-training seed × transfer seed), ``sd`` their sample sd over ``n_runs``. ``converged``: every
    run's validation curve plateaued (:class:`gvsl.transfer.PlateauRule`). ``gain`` is the mean
    paired difference from scratch's runs of the same seeds, with the 95 % interval ``gain_low`` –
    ``gain_high`` over pre-training seeds and test cases (:func:`gain_interval`; one cell at a time, not corrected
    for multiplicity: the claims are, :func:`gvsl.report.claims`); NaN bounds with fewer than
    :data:`gvsl.stats.MIN_SEEDS` pre-training seeds. Scratch's own rows have no gain. Settings that were not run
    are absent.
    """
    rows = []
    for method in METHODS:
        for protocol in PROTOCOLS:
            for task in TASKS:
                summary = _setting(summaries, method, protocol, task)
                if summary is None:
                    continue
                scratch = _setting(summaries, SCRATCH, protocol, task)
                gain = gain_interval(summary, scratch) if method != SCRATCH and scratch is not None else None
                gain = (math.nan,) * 3 if gain is None else tuple(100.0 * g for g in gain)
                paper = PAPER_TABLE1[(method, protocol, task)]
                rows.append(
                    {
                        "method": method,
                        "protocol": protocol,
                        "task": task,
                        "metric": summary["metric"],
                        "value": 100.0 * float(summary["mean"]),
                        "sd": 100.0 * float(summary["sd"]),
                        "n_runs": int(summary["n_runs"]),
                        "converged": bool(summary["converged"]),
                        "gain": gain[0],
                        "gain_low": gain[1],
                        "gain_high": gain[2],
                        "paper_value": paper,
                        "paper_gain": math.nan
                        if method == SCRATCH
                        else paper - PAPER_TABLE1[(SCRATCH, protocol, task)],
                        "dataset": summary["dataset_source"],
                        "profile": profile,
                    }
                )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def _setting(summaries: pd.DataFrame, method: str, protocol: str, task: str) -> pd.Series | None:
    found = summaries[
        (summaries["method"] == method) & (summaries["protocol"] == protocol) & (summaries["task"] == task)
    ]
    return None if found.empty else found.iloc[0]


def _paired_runs(method: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[tuple[int, Any, Any]]:
    """(pre-training seed, method's per-case record, baseline's) for every run of ``method`` that ``baseline``
    also ran: the same pre-training seed and the same transfer seed."""
    if list(method["case_ids"]) != list(baseline["case_ids"]):
        raise GVSLInputError(
            f"{method['task']}-{method['protocol']}: {method['method']} and {baseline['method']} were "
            "tested on different cases; their runs cannot be paired"
        )
    baseline_runs = {tuple(run): case for run, case in zip(baseline["runs"], baseline["per_case"])}
    return [
        (int(run[0]), case, baseline_runs[tuple(run)])
        for run, case in zip(method["runs"], method["per_case"])
        if tuple(run) in baseline_runs
    ]


def _score(record: Mapping[str, Any], metric: str) -> tuple[Any, np.ndarray | None]:
    """Table 1's score function of a setting and the strata of its cases (classification: the targets)."""
    from gvsl.stats import weighted_auc, weighted_mean_dice

    if metric == "auc":
        target = np.asarray(record["target"])

        def score(probability: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return weighted_auc(probability, target, weights)

        return score, target
    return weighted_mean_dice, None


def _per_case(record: Mapping[str, Any], metric: str) -> np.ndarray:
    return np.asarray(record["probability"] if metric == "auc" else record["dice"], dtype=np.float64)


def paired_gains(
    method: Mapping[str, Any], baseline: Mapping[str, Any]
) -> tuple[list[int], np.ndarray, np.ndarray, list | None] | None:
    """Per pre-training seed, ``method``'s gain over ``baseline`` on every test case and with each case left
    out (:func:`gvsl.stats.jackknife_gains`: the seeds, ``full``, ``deleted``), with the jackknife's strata;
    None when they share no run."""
    from gvsl.stats import jackknife_gains

    pairs = _paired_runs(method, baseline)
    if not pairs:
        return None
    metric = method["metric"]
    score, strata = _score(pairs[0][1], metric)
    seeds, full, deleted = jackknife_gains(
        [_per_case(m, metric) for _, m, _ in pairs],
        [_per_case(b, metric) for _, _, b in pairs],
        score,
        [s for s, _, _ in pairs],
    )
    groups = None if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    return seeds, full, deleted, groups


def gain_interval(method: Mapping[str, Any], scratch: Mapping[str, Any], level: float = 0.95) -> Interval | None:
    """A setting's gain over scratch (or over any other setting of its task and protocol; fractions, not percent)
    with its t interval over pre-training seeds and test cases, or None when the two share no run.

    Runs are paired by (pre-training seed, transfer seed) and scored on the same test cases; the runs of one
    pre-training seed are averaged into its gain (:func:`gvsl.stats.paired_gain_interval`; classification cases
    are left out within each target). With fewer than :data:`gvsl.stats.MIN_SEEDS` pre-training seeds the
    interval has no bounds (NaN).

    Raises:
        GVSLInputError: the two settings were tested on different cases.
    """
    from gvsl.stats import seed_case_interval

    found = paired_gains(method, scratch)
    if found is None:
        return None
    _, full, deleted, groups = found
    return seed_case_interval(full, deleted, groups, level)


def with_sources(table: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each row's runs (``p<pre-training seed>-t<transfer seed>``) and commit added (for the
    report page; table1.csv keeps its columns)."""
    keys = ["method", "protocol", "task"]
    sources = summaries[[*keys, "runs", "commit"]].assign(
        runs=lambda frame: frame["runs"].map(lambda runs: ", ".join(f"p{p}-t{t}" for p, t in runs))
    )
    return table.merge(sources, on=keys, how="left", validate="one_to_one")


def _cell(value: float, sd: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if math.isnan(sd) else f"{value:.1f} ± {sd:.1f}"


def _paper_cell(value: float) -> str:
    return "paper: not recorded" if math.isnan(value) else f"paper {value:.1f}"


def _gain_cell(row: Any) -> str:
    """``+4.2 [1.0, 7.5]*``: the star marks an interval that excludes 0; ``+4.2 ‡``: too few seeds for one."""
    if math.isnan(row.gain):
        return "–"
    paper = "–" if math.isnan(row.paper_gain) else f"{row.paper_gain:+.1f}"
    if math.isnan(row.gain_low):
        return f"{row.gain:+.1f} ‡ / {paper}"
    star = "*" if row.gain_low > 0 or row.gain_high < 0 else ""
    return f"{row.gain:+.1f} [{row.gain_low:+.1f}, {row.gain_high:+.1f}]{star} / {paper}"


def table1_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """Table 1 laid out as in the paper: ours (± sd over runs, † = not plateaued) with the paper's value, then
    gains over scratch with their 95 % intervals (* = the interval excludes 0, uncorrected for multiplicity;
    ‡ = fewer than :data:`gvsl.stats.MIN_SEEDS` pre-training seeds, no interval) beside the paper's gains."""
    columns = [(p, t) for p in PROTOCOLS for t in TASKS if ((table["protocol"] == p) & (table["task"] == t)).any()]
    lookup = {(r.method, r.protocol, r.task): r for r in table.itertuples()}
    header = "| method | " + " | ".join(f"{PROTOCOL_NAMES[p]} {t} {TASK_METRICS[t]}" for p, t in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, rule]
    gains = [header.replace("| method |", "| gain over scratch [95 % CI] / paper |"), rule]
    for method in METHODS:
        rows = [lookup.get((method, p, t)) for p, t in columns]
        cells = [
            ""
            if row is None
            else f"{_cell(row.value, row.sd)}{'' if row.converged else ' †'} ({_paper_cell(row.paper_value)})"
            for row in rows
        ]
        if any(cells):
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
        if method != SCRATCH and any(cells):
            gains.append(
                f"| {METHOD_NAMES[method]} | "
                + " | ".join("" if row is None else _gain_cell(row) for row in rows)
                + " |"
            )
    notes = [
        "",
        "† validation curve not plateaued within the iteration cap; * the gain's 95 % interval (t, over "
        "pre-training seeds and test cases; per cell, not corrected for multiplicity) excludes 0; ‡ fewer than "
        f"{MIN_SEEDS} pre-training seeds: the mean gain without an interval.",
    ]
    head = [f"**Table 1.** {caption}".rstrip(), ""] if caption else []
    return "\n".join([*head, *lines, *notes, "", *gains]) + "\n"


def metrics_summary(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """``{protocol: {task: {method: {value, gain, gain_low, gain_high, converged}}}}`` (percent) for
    ``dvc metrics show``; scratch has no gain."""

    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(float(value), 2)

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in table.itertuples():
        cell: dict[str, Any] = {"value": number(row.value)}
        if row.method != SCRATCH:
            cell.update(gain=number(row.gain), gain_low=number(row.gain_low), gain_high=number(row.gain_high))
        cell["converged"] = bool(row.converged)
        out.setdefault(row.protocol, {}).setdefault(row.task, {})[row.method] = cell
    return out


def provenance(summaries: pd.DataFrame, settings: Any) -> dict[str, Any]:
    """What produced the numbers: profile, data sources, seeds, commits and the settings that matter
    (``settings``: the pipeline's :class:`~gvsl.pipeline.config.Settings`)."""
    from gvsl.settings import to_mapping

    return {
        "profile": settings.profile,
        "data sources": {
            task: sorted(set(summaries.loc[summaries["task"] == task, "dataset_source"]))
            for task in TASKS
            if (summaries["task"] == task).any()
        },
        "pre-training seeds": sorted({s for seeds in summaries["pretrain_seeds"] for s in seeds}),
        "transfer seeds per protocol": {
            p: sorted({s for seeds in summaries.loc[summaries["protocol"] == p, "seeds"] for s in seeds})
            for p in PROTOCOLS
        },
        "commits": sorted(set(summaries["commit"])),
        "environments": [
            json.loads(e)
            for e in sorted(
                {
                    json.dumps(e, sort_keys=True)
                    for envs in summaries.get("environments", [])
                    if isinstance(envs, list)
                    for e in envs
                }
            )
        ],
        "backbone widths": list(settings.model.channels),
        "pre-training": to_mapping(settings.pretrain),
        "transfer": to_mapping(settings.transfer),
    }
