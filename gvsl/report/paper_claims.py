"""The paper's claims, each tested per task against a criterion fixed in advance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from gvsl.methods import BASELINES
from gvsl.report.table import _setting, gain_interval
from gvsl.table1 import ABLATIONS, METHOD_NAMES, TASKS

# compared with whole GVSL by :func:`claims`: every baseline and every ablation
_COMPARED = (*BASELINES, *ABLATIONS)
CLAIMS_COLUMNS = ["claim", "task", "estimate", "low", "high", "converged", "shown"]


def claims(table: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """Whether this run shows each of the paper's claims, per task, with the 95 % interval it rests on.

    1. *GVSL beats scratch on linear probes*: whole GVSL's linear gain over scratch; shown when its
       interval lies above 0.
    2. *Whole GVSL beats each baseline and each ablation* (linear): GVSL minus the other method, paired
       by seed like the gains over scratch (:func:`gain_interval`); shown when the interval lies above 0.
    3. *Fine-tune gains are small*: GVSL's fine-tune gain over scratch against its linear gain; shown
       when the fine-tune interval lies wholly below the linear one (two disjoint 95 % intervals: a
       stricter test than one 95 % interval of the difference).

    ``estimate``, ``low`` and ``high`` are percent (claim 3: the fine-tune gain and its interval).
    ``converged``: every cell compared plateaued; a claim resting on unconverged cells is weaker
    evidence either way. Rows whose cells were not run are left out. The criteria are fixed here,
    not tuned to any outcome.
    """
    rows = []
    lookup = {(r.method, r.protocol, r.task): r for r in table.itertuples()}
    for task in TASKS:
        linear = lookup.get(("gvsl", "linear", task))
        scratch = lookup.get(("scratch", "linear", task))
        if linear is not None and scratch is not None and not math.isnan(linear.gain):
            rows.append(_claim("GVSL beats scratch on linear probes", task, (linear.gain, linear.gain_low,
                                                                             linear.gain_high),
                               linear.converged and scratch.converged, linear.gain_low > 0))
        for other_method in _COMPARED:
            other = lookup.get((other_method, "linear", task))
            whole, versus = _setting(summaries, "gvsl", "linear", task), _setting(summaries, other_method, "linear", task)
            gain = None if whole is None or versus is None else gain_interval(whole, versus)
            if gain is not None and linear is not None and other is not None:
                gain = tuple(100.0 * g for g in gain)
                rows.append(_claim(f"whole GVSL beats {METHOD_NAMES[other_method]} (linear)", task, gain,
                                   linear.converged and other.converged, gain[1] > 0))
        finetune = lookup.get(("gvsl", "finetune", task))
        if linear is not None and finetune is not None and not (math.isnan(linear.gain) or math.isnan(finetune.gain)):
            scratch_finetune = lookup.get(("scratch", "finetune", task))
            rows.append(_claim("fine-tune gains are small (below the linear gain)", task,
                               (finetune.gain, finetune.gain_low, finetune.gain_high),
                               all(r is not None and r.converged for r in (linear, scratch, finetune, scratch_finetune)),
                               finetune.gain_high < linear.gain_low))
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)


def _claim(claim: str, task: str, gain: Sequence[float], converged: bool, shown: bool) -> dict[str, Any]:
    return {"claim": claim, "task": task, "estimate": gain[0], "low": gain[1], "high": gain[2],
            "converged": bool(converged), "shown": bool(shown)}


def claims_markdown(found: pd.DataFrame) -> str:
    """The claims as a Markdown table: estimate [95 % CI] in points, shown or not shown."""
    lines = ["| claim | task | estimate [95 % CI] | cells converged | shown |", "|---|---|---|---|---|"]
    for row in found.itertuples():
        lines.append(f"| {row.claim} | {row.task} | {row.estimate:+.1f} [{row.low:+.1f}, {row.high:+.1f}] | "
                     f"{'yes' if row.converged else 'no'} | {'**shown**' if row.shown else 'not shown'} |")
    return "\n".join(lines) + "\n"
