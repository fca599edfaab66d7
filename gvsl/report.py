"""Table 1 and Figures 6–8 of the paper, regenerated from the pipeline's outputs.

Inputs (written by :mod:`gvsl.pipeline`): one ``summary.json`` per transfer setting under
``build/transfer/<method>/<TASK>-<protocol>/`` (test metric and per-case scores per run, validation
curves, whether they plateaued, provenance)
and one folder per method under ``build/pretrain/`` (``backbone.pt``, ``checkpoint.pt``, DVCLive logs).
Outputs are pandas tables, Markdown, matplotlib figures and one HTML page; the report notebook saves
them under ``results/``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files, not windows: the pipeline runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from gvsl.errors import GVSLInputError  # noqa: E402
from gvsl.pipeline import METHODS, PROTOCOLS, TASKS  # noqa: E402

__all__ = ["ABLATIONS", "CLAIMS_COLUMNS", "METHOD_NAMES", "PAPER_TABLE1", "claims", "claims_markdown", "PRETEXT_LABELS", "TABLE1_COLUMNS", "figure6_validation", "gain_interval", "figure7_tsne",
           "figure8_pretext", "figure_registration", "load_pretext", "load_summaries", "local_features",
           "metrics_summary", "pretext_metrics", "provenance", "registration_example", "table1", "table1_markdown",
           "training_terms", "with_sources", "write_html"]

METHOD_NAMES = {"scratch": "Scratch", "no_zmatch": "w/o Z-Matching", "no_fundament": "w/o Fundament",
                "no_affine": "w/o Affine head", "gvsl": "GVSL (whole)"}
PROTOCOL_NAMES = {"linear": "(a) linear", "finetune": "(b) fine-tune"}
TASK_METRICS = {"SHC": "Dice", "SAC": "Dice", "CCC": "AUC", "SBM": "Dice"}

# He et al., CVPR 2023, Table 1 (percent): method -> protocol -> (SHC, SAC, CCC, SBM)
_PAPER = {
    "scratch": {"linear": (21.9, 10.0, 52.7, 56.4), "finetune": (87.8, 80.4, 74.4, 89.7)},
    "no_zmatch": {"linear": (49.1, 21.1, 55.8, 45.1), "finetune": (88.3, 81.2, 81.3, 89.7)},
    "no_fundament": {"linear": (45.3, 0.0, 58.8, 48.5), "finetune": (87.0, 79.5, 76.6, 89.0)},
    "no_affine": {"linear": (57.7, 17.9, 57.6, 53.4), "finetune": (89.4, 82.3, 79.8, 89.8)},
    "gvsl": {"linear": (68.4, 28.7, 60.8, 79.9), "finetune": (91.2, 81.3, 82.2, 90.0)},
}
#: (method, protocol, task) -> the paper's value in percent
PAPER_TABLE1 = {(m, p, t): v for m, rows in _PAPER.items() for p, values in rows.items()
                for t, v in zip(TASKS, values)}

_SUMMARY_KEYS = {"task", "protocol", "method", "metric", "seeds", "pretrain_seeds", "runs", "test", "mean", "sd",
                 "n_runs", "val_curves", "converged", "per_case", "case_ids", "dataset_source", "profile", "commit"}
#: Table 1's columns (results/table1.csv)
TABLE1_COLUMNS = ["method", "protocol", "task", "metric", "value", "sd", "n_runs", "converged", "gain", "gain_low",
                  "gain_high", "paper_value", "paper_gain", "dataset", "profile"]


# ------------------------------------------------------------------------------------------ Table 1


def load_summaries(transfer_root: str | Path) -> pd.DataFrame:
    """One row per transfer setting, from ``<transfer_root>/<method>/<TASK>-<protocol>/summary.json``."""
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
        rows.append({**summary, "path": str(path)})
    return pd.DataFrame(rows)


def table1(summaries: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Long-format Table 1, one row per setting, columns :data:`TABLE1_COLUMNS`.

    ``value``, ``sd``, the gains and ``paper_value`` are percent. ``value`` is the mean over every run
    (pre-training seed × transfer seed), ``sd`` their sample sd over ``n_runs``. ``converged``: every
    run's validation curve plateaued (:class:`gvsl.transfer.PlateauRule`). ``gain`` is the mean
    paired difference from scratch's runs of the same seeds, with the 95 % interval ``gain_low`` –
    ``gain_high`` (:func:`gain_interval`); scratch's own rows have none. Settings that were not run
    are absent.
    """
    rows = []
    for method in METHODS:
        for protocol in PROTOCOLS:
            for task in TASKS:
                summary = _setting(summaries, method, protocol, task)
                if summary is None:
                    continue
                scratch = _setting(summaries, "scratch", protocol, task)
                gain = gain_interval(summary, scratch) if method != "scratch" and scratch is not None else None
                gain = (math.nan,) * 3 if gain is None else tuple(100.0 * g for g in gain)
                paper = PAPER_TABLE1[(method, protocol, task)]
                rows.append({"method": method, "protocol": protocol, "task": task, "metric": summary["metric"],
                             "value": 100.0 * float(summary["mean"]), "sd": 100.0 * float(summary["sd"]),
                             "n_runs": int(summary["n_runs"]), "converged": bool(summary["converged"]),
                             "gain": gain[0], "gain_low": gain[1], "gain_high": gain[2], "paper_value": paper,
                             "paper_gain": math.nan if method == "scratch" else paper - PAPER_TABLE1[
                                 ("scratch", protocol, task)],
                             "dataset": summary["dataset_source"], "profile": profile})
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def _setting(summaries: pd.DataFrame, method: str, protocol: str, task: str) -> pd.Series | None:
    found = summaries[(summaries["method"] == method) & (summaries["protocol"] == protocol)
                      & (summaries["task"] == task)]
    return None if found.empty else found.iloc[0]


def gain_interval(method: Mapping[str, Any], scratch: Mapping[str, Any], level: float = 0.95,
                  resamples: int = 4000, seed: int = 0) -> tuple[float, float, float] | None:
    """A setting's gain over scratch (fractions, not percent) with its bootstrap interval, or None.

    Runs are paired by (pre-training seed, transfer seed) and scored on the same test cases; runs and
    cases are resampled crossed (:func:`gvsl.stats.paired_gain_interval`), classification cases
    within each target. None when the two settings share no run or no test case list.
    """
    from gvsl.stats import paired_gain_interval, weighted_auc, weighted_mean_dice

    if list(method["case_ids"]) != list(scratch["case_ids"]):
        return None
    scratch_runs = {tuple(run): case for run, case in zip(scratch["runs"], scratch["per_case"])}
    pairs = [(case, scratch_runs[tuple(run)]) for run, case in zip(method["runs"], method["per_case"])
             if tuple(run) in scratch_runs]
    if not pairs:
        return None
    if method["metric"] == "auc":
        target = np.asarray(pairs[0][0]["target"])
        runs = [[np.asarray(record["probability"]) for record in pair] for pair in pairs]
        def score(probability: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return weighted_auc(probability, target, weights)

        strata = target
    else:
        runs = [[np.asarray(record["dice"], dtype=np.float64) for record in pair] for pair in pairs]
        score, strata = weighted_mean_dice, None
    return paired_gain_interval([m for m, _ in runs], [b for _, b in runs], score, strata=strata, level=level,
                                resamples=resamples, seed=seed)


#: Table 1's ablations, each compared with whole GVSL by :func:`claims`
ABLATIONS = ("no_zmatch", "no_fundament", "no_affine")
CLAIMS_COLUMNS = ["claim", "task", "estimate", "low", "high", "converged", "shown"]


def claims(table: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """Whether this run shows each of the paper's claims, per task, with the 95 % interval it rests on.

    1. *GVSL beats scratch on linear probes*: whole GVSL's linear gain over scratch; shown when its
       interval lies above 0.
    2. *Whole GVSL beats each ablation* (linear): GVSL minus the ablation, paired by seed like the gains
       over scratch (:func:`gain_interval`); shown when the interval lies above 0.
    3. *Fine-tune gains are small*: GVSL's fine-tune gain over scratch against its linear gain; shown
       when the fine-tune interval lies wholly below the linear one.

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
        for ablation in ABLATIONS:
            other = lookup.get((ablation, "linear", task))
            whole, versus = _setting(summaries, "gvsl", "linear", task), _setting(summaries, ablation, "linear", task)
            gain = None if whole is None or versus is None else gain_interval(whole, versus)
            if gain is not None and linear is not None and other is not None:
                gain = tuple(100.0 * g for g in gain)
                rows.append(_claim(f"whole GVSL beats {METHOD_NAMES[ablation]} (linear)", task, gain,
                                   linear.converged and other.converged, gain[1] > 0))
        finetune = lookup.get(("gvsl", "finetune", task))
        if linear is not None and finetune is not None and not (math.isnan(linear.gain) or math.isnan(finetune.gain)):
            rows.append(_claim("fine-tune gains are smaller than linear gains", task,
                               (finetune.gain, finetune.gain_low, finetune.gain_high),
                               linear.converged and finetune.converged, finetune.gain_high < linear.gain_low))
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


def with_sources(table: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each row's runs (``p<pre-training seed>-t<transfer seed>``) and commit added (for the
    report page; table1.csv keeps its columns)."""
    keys = ["method", "protocol", "task"]
    sources = summaries[[*keys, "runs", "commit"]].assign(
        runs=lambda frame: frame["runs"].map(lambda runs: ", ".join(f"p{p}-t{t}" for p, t in runs)))
    return table.merge(sources, on=keys, how="left", validate="one_to_one")


def _cell(value: float, sd: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if math.isnan(sd) else f"{value:.1f} ± {sd:.1f}"


def _gain_cell(row: Any) -> str:
    """``+4.2 [1.0, 7.5]*``: the star marks an interval that excludes 0."""
    if math.isnan(row.gain):
        return "–"
    star = "*" if row.gain_low > 0 or row.gain_high < 0 else ""
    return f"{row.gain:+.1f} [{row.gain_low:+.1f}, {row.gain_high:+.1f}]{star} / {row.paper_gain:+.1f}"


def table1_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """Table 1 laid out as in the paper: ours (± sd over runs, † = not plateaued) with the paper's value, then
    gains over scratch with their 95 % intervals (* = the interval excludes 0) beside the paper's gains."""
    columns = [(p, t) for p in PROTOCOLS for t in TASKS if ((table["protocol"] == p) & (table["task"] == t)).any()]
    lookup = {(r.method, r.protocol, r.task): r for r in table.itertuples()}
    header = "| method | " + " | ".join(f"{PROTOCOL_NAMES[p]} {t} {TASK_METRICS[t]}" for p, t in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, rule]
    gains = [header.replace("| method |", "| gain over scratch [95 % CI] / paper |"), rule]
    for method in METHODS:
        rows = [lookup.get((method, p, t)) for p, t in columns]
        cells = ["" if row is None else f"{_cell(row.value, row.sd)}{'' if row.converged else ' †'} "
                 f"(paper {row.paper_value:.1f})" for row in rows]
        if any(cells):
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
        if method != "scratch" and any(cells):
            gains.append(f"| {METHOD_NAMES[method]} | " + " | ".join(
                "" if row is None else _gain_cell(row) for row in rows) + " |")
    notes = ["", "† validation curve not plateaued within the iteration cap; * gain interval excludes 0."]
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
        if row.method != "scratch":
            cell.update(gain=number(row.gain), gain_low=number(row.gain_low), gain_high=number(row.gain_high))
        cell["converged"] = bool(row.converged)
        out.setdefault(row.protocol, {}).setdefault(row.task, {})[row.method] = cell
    return out


def provenance(summaries: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    """What produced the numbers: profile, data sources, seeds, commits and the settings that matter."""
    return {
        "profile": params.get("profile"),
        "data sources": {task: sorted(set(summaries.loc[summaries["task"] == task, "dataset_source"]))
                         for task in TASKS if (summaries["task"] == task).any()},
        "pre-training seeds": sorted({s for seeds in summaries["pretrain_seeds"] for s in seeds}),
        "transfer seeds per protocol": {p: sorted({s for seeds in summaries.loc[summaries["protocol"] == p, "seeds"]
                                          for s in seeds}) for p in PROTOCOLS},
        "commits": sorted(set(summaries["commit"])),
        "backbone widths": params.get("model", {}).get("channels"),
        "pre-training": params.get("pretrain"),
        "transfer": params.get("transfer"),
    }


# ---------------------------------------------------------------------------------------- figures


def _curves(summaries: pd.DataFrame, task: str, protocol: str, method: str) -> pd.DataFrame | None:
    found = summaries[(summaries["task"] == task) & (summaries["protocol"] == protocol)
                      & (summaries["method"] == method)]
    if found.empty:
        return None
    frames = [pd.DataFrame(curve, columns=["iteration", "value"]).assign(run=f"p{run[0]}-t{run[1]}")
              for run, curve in zip(found.iloc[0]["runs"], found.iloc[0]["val_curves"])]
    return pd.concat(frames)


def figure6_validation(summaries: pd.DataFrame, task: str = "SHC", protocol: str = "finetune",
                       methods: Sequence[str] = ("scratch", "no_zmatch", "gvsl")) -> plt.Figure:
    """Validation metric vs iteration (mean over runs, band = min–max), as the paper's Fig. 6."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    metric = "metric"
    for method in methods:
        curves = _curves(summaries, task, protocol, method)
        if curves is None:
            continue
        stats = curves.groupby("iteration")["value"].agg(["mean", "min", "max"]) * 100
        ax.plot(stats.index, stats["mean"], marker="o", label=METHOD_NAMES[method])
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2)
        metric = summaries.loc[summaries["task"] == task, "metric"].iloc[0]
    ax.set(xlabel="iteration", ylabel=f"validation {metric} (%)", title=f"Fig. 6 — {task}, {PROTOCOL_NAMES[protocol]}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def local_features(pretrain_root: str | Path, pretrain_seed: int, methods: Sequence[str], dataset_path: str | Path,
                   max_per_class: int = 150, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Local features of each method's backbone (of ``pretrain_seed``) at labelled voxels of the dataset's
    test cases; ``seed`` draws the voxels."""
    from gvsl.checkpoint import load_backbone
    from gvsl.data import load_prepared
    from gvsl.transfer import extract_local_features

    cases = load_prepared(dataset_path).load_split("test")
    features = {}
    for method in methods:
        path = Path(pretrain_root) / method / f"seed{pretrain_seed}" / "backbone.pt"
        if path.is_file():
            features[method] = extract_local_features(load_backbone(path), cases, max_per_class=max_per_class,
                                                      seed=seed)
    return features


def figure7_tsne(features: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                 seed: int = 0) -> plt.Figure:
    """t-SNE of the local feature per structure, one panel per initialisation (the paper's Fig. 7)."""
    from sklearn.manifold import TSNE

    from gvsl.viz import label_colormap

    titles = {"scratch": "scratch", "no_zmatch": "restoration only", "no_fundament": "Z-matching only",
              "no_affine": "w/o affine head", "gvsl": "whole GVSL"}
    fig, axes = plt.subplots(1, len(features), figsize=(3.4 * len(features), 3.6), squeeze=False)
    cmap = label_colormap(len(class_names))
    for ax, (method, (x, y)) in zip(axes[0], features.items()):
        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        # standardised features: t-SNE distances should not be dominated by one channel's scale
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
        embedded = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
        ax.scatter(embedded[:, 0], embedded[:, 1], c=[cmap(int(k)) for k in y], s=5)
        ax.set_title(titles.get(method, method), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [matplotlib.patches.Patch(color=cmap(k + 1), label=n) for k, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 7), fontsize=7, frameon=False)
    fig.suptitle("Fig. 7 — t-SNE of the local feature f^l per heart structure", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


#: variants with a Z-matching head, as Fig. 8 names them
PRETEXT_LABELS = {"no_fundament": "Z-matching only (w/o fundament)", "no_affine": "w/o affine head",
                  "gvsl": "whole GVSL"}
PRETEXT_KEYS = ("identity_dice", "affine_dice", "warped_dice")


def _seed_folders(pretrain_root: str | Path, method: str) -> list[Path]:
    folders = [p for p in (Path(pretrain_root) / method).glob("seed*") if p.name[4:].isdigit()]
    return sorted(folders, key=lambda p: int(p.name[4:]))


def load_pretext(pretrain_root: str | Path, methods: Sequence[str] = tuple(PRETEXT_LABELS)) -> dict[str, list[dict]]:
    """``pretext.json`` of every seed of each method that has one (``{method: [record per seed]}``)."""
    found: dict[str, list[dict]] = {}
    for method in methods:
        for folder in _seed_folders(pretrain_root, method):
            path = folder / "pretext.json"
            if path.is_file():
                try:
                    record = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as error:
                    raise GVSLInputError(f"{path}: unreadable held-out evaluation ({error})") from None
                found.setdefault(method, []).append({**record, "seed": int(folder.name[4:])})
    return found


def pretext_metrics(pretext: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per method, from the last held-out evaluation of every seed (means over seeds and pairs):
    ``identity_dice``, ``affine_dice`` (with an affine head), ``warped_dice``, ``heldout_ncc_first``,
    ``heldout_ncc_last``, and ``warped_gain`` (warped − identity Dice) with its 95 % interval
    (``warped_gain_low``, ``warped_gain_high``; a bootstrap over seeds and held-out subjects), all in
    percent except the NCC losses."""
    from gvsl.stats import crossed_bootstrap_interval

    out: dict[str, dict[str, float]] = {}
    for method, records in pretext.items():
        last = [r["last"]["per_pair"] for r in records]
        row = {"seeds": len(records), "iterations": int(records[0]["iterations"]),
               "heldout_ncc_first": round(float(np.mean([r["first"]["mean"]["ncc"] for r in records])), 4),
               "heldout_ncc_last": round(float(np.mean([r["last"]["mean"]["ncc"] for r in records])), 4)}
        for key in PRETEXT_KEYS:
            if all(key in p for p in last):
                row[key] = round(100 * float(np.mean([p[key] for p in last])), 2)
        if all("warped_dice" in p for p in last):
            gain = 100 * (np.array([p["warped_dice"] for p in last]) - np.array([p["identity_dice"] for p in last]))
            pairs = [tuple(p) for p in records[0]["pairs"]]
            if any([tuple(p) for p in r["pairs"]] != pairs for r in records):
                raise GVSLInputError(f"{method}: its seeds were evaluated on different held-out pairs")
            subjects = sorted({s for p in pairs for s in p})
            index = {s: i for i, s in enumerate(subjects)}
            # ordered pairs of a few subjects are not independent: the interval resamples subjects
            mean, low, high = crossed_bootstrap_interval(gain, [(index[a], index[b]) for a, b in pairs])
            row["subjects"], row["pairs"] = len(subjects), len(pairs)
            row.update(warped_gain=round(mean, 2), warped_gain_low=round(low, 2), warped_gain_high=round(high, 2))
        out[method] = row
    return out


def _dvclive_curve(folder: Path, metric: str) -> pd.Series | None:
    path = folder / "dvclive" / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return None
    log = pd.read_csv(path, sep="\t")
    return log.set_index("step")[metric.rsplit("/", 1)[1]]


def training_terms(pretrain_root: str | Path, method: str) -> pd.DataFrame:
    """Every training loss term per iteration, one column per (term, seed), from the DVCLive logs."""
    columns = {}
    for folder in _seed_folders(pretrain_root, method):
        for tsv in sorted((folder / "dvclive" / "plots" / "metrics" / "train").glob("*.tsv")):
            columns[f"{tsv.stem} {folder.name}"] = _dvclive_curve(folder, f"train/{tsv.stem}")
    return pd.DataFrame(columns)


def _mean_curve(pretrain_root: str | Path, method: str, metric: str) -> pd.Series | None:
    """Mean over seeds of a DVCLive metric (``train/ncc``, ``heldout/warped_dice``…)."""
    curves = [c for f in _seed_folders(pretrain_root, method) if (c := _dvclive_curve(f, metric)) is not None]
    return pd.concat(curves, axis=1).mean(axis=1) if curves else None


def figure8_pretext(pretrain_root: str | Path, variants: Sequence[str] = tuple(PRETEXT_LABELS),
                    smooth_window: int = 10) -> plt.Figure:
    """Fig. 8, extended: training NCC (the paper's panel), held-out NCC and held-out warped-label Dice.

    Curves are means over pre-training seeds. The held-out panels draw the unregistered pairs
    (identity) as a black dashed line; the Dice panel draws the affine part alone dotted.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    identity: dict[str, pd.Series] = {}
    for index, variant in enumerate(variants):
        colour, label = f"C{index}", PRETEXT_LABELS.get(variant, variant)
        train = _mean_curve(pretrain_root, variant, "train/ncc")
        if train is not None:
            axes[0].plot(train.index, train, color=colour, alpha=0.2, linewidth=0.8)
            axes[0].plot(train.index, train.rolling(smooth_window, min_periods=1).mean(), color=colour, label=label)
        for ax, metric in ((axes[1], "ncc"), (axes[2], "warped_dice")):
            curve = _mean_curve(pretrain_root, variant, f"heldout/{metric}")
            if curve is not None:
                scale = 100 if metric.endswith("dice") else 1
                ax.plot(curve.index, scale * curve, color=colour, marker=".", label=label)
        affine = _mean_curve(pretrain_root, variant, "heldout/affine_dice")
        if affine is not None:
            axes[2].plot(affine.index, 100 * affine, color=colour, linestyle=":", label=f"{label}, affine only")
        for metric in ("identity_ncc", "identity_dice"):
            curve = _mean_curve(pretrain_root, variant, f"heldout/{metric}")
            if curve is not None:
                identity.setdefault(metric, curve)
    for ax, metric in ((axes[1], "identity_ncc"), (axes[2], "identity_dice")):
        if metric in identity:
            scale = 100 if metric.endswith("dice") else 1
            ax.axhline(scale * float(identity[metric].mean()), color="black", linestyle="--", linewidth=1,
                       label="identity (no registration)")
    titles = ("Fig. 8 — training NCC loss", "held-out pairs: NCC loss", "held-out pairs: warped-label Dice")
    ylabels = ("NCC loss (moving average)", "NCC loss", "mean Dice of warped labels (%)")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set(xlabel="pre-training iteration", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def registration_example(checkpoint_path: str | Path, dataset_path: str | Path, split: str = "val",
                         ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Register two different cases with a pre-trained GVSL (fixed = image A, moving = image B).

    The cases are centre-cropped to the checkpoint's training crop, as the held-out evaluation does
    (:func:`gvsl.pretext.heldout_pairs`). No augmentation, eval mode. Returns the volumes (fixed,
    moving, warped), their label maps when
    the dataset has labels (the moving labels warped by nearest neighbour), the fused displacement
    field (3, D, H, W) in voxels, the NCC loss before and after, and the warped-label Dice before
    and after (percent, foreground classes).
    """
    from gvsl.checkpoint import load_file, load_pretrained_gvsl
    from gvsl.data import load_prepared
    from gvsl.pretext import evaluate_pretext, heldout_pairs

    state = load_file(checkpoint_path)
    model = load_pretrained_gvsl(state)
    if not model.z_matching:
        raise GVSLInputError(f"{checkpoint_path}: this variant has no Z-matching head; nothing registers")
    dataset = load_prepared(dataset_path)
    chosen = list(ids) if ids is not None else list(dataset.ids(split))[:2]
    if len(chosen) != 2 or chosen[0] == chosen[1]:
        raise GVSLInputError(f"registration_example needs two different cases, got {chosen}")
    cases = [dataset.load_case(i) for i in chosen]
    if cases[0].image.shape != cases[1].image.shape:
        raise GVSLInputError(f"cases {chosen} differ in shape: {cases[0].image.shape} vs {cases[1].image.shape}")
    # the field of view of the held-out evaluation: the training crop (centred), else the whole volume
    crop = state.get("config", {}).get("crop", cases[0].image.shape)
    pair = heldout_pairs(cases, crop, num_classes=len(dataset.info.classes) + 1).subset(slice(0, 1))
    model.eval()
    with torch.no_grad():
        out = model(pair.fixed, pair.moving)
    scores = evaluate_pretext(model, pair).summary()
    example = {"ids": chosen, "fixed": pair.fixed[0, 0].numpy(), "moving": pair.moving[0, 0].numpy(),
               "warped": out.warped[0, 0].numpy(), "ddf": out.ddf[0].numpy(), "ncc_before": scores["identity_ncc"],
               "ncc_after": scores["ncc"]}
    if pair.labelled:
        from gvsl.geometry import warp

        moving_label = pair.moving_labels[:1]
        example.update(fixed_label=pair.fixed_labels[0, 0].numpy(), moving_label=moving_label[0, 0].numpy(),
                       warped_label=warp(moving_label.float(), out.ddf, "nearest")[0, 0].long().numpy(),
                       dice_before=100 * scores["identity_dice"], dice_after=100 * scores["warped_dice"],
                       num_classes=pair.num_classes)
    return example


def figure_registration(example: Mapping[str, Any], axis: int = 2) -> plt.Figure:
    """Fixed, moving and warped (labels overlaid), the differences before/after, and the DVF of the middle slice."""
    from gvsl.viz import label_colormap

    index = example["fixed"].shape[axis] // 2

    def cut(volume: np.ndarray) -> np.ndarray:
        return np.take(volume, index, axis=axis).T

    in_plane = [a for a in range(3) if a != axis]
    ddf = example["ddf"]
    magnitude = cut(np.linalg.norm(ddf, axis=0))
    labelled = "fixed_label" in example
    dice = (lambda when: f", Dice {example[f'dice_{when}']:.1f}") if labelled else (lambda when: "")
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
    panels = [(cut(example["fixed"]), f"fixed {example['ids'][0]}", "gray", "fixed_label"),
              (cut(example["moving"]), f"moving {example['ids'][1]}{dice('before')}", "gray", "moving_label"),
              (cut(example["warped"]), f"warped moving{dice('after')}", "gray", "warped_label"),
              (np.abs(cut(example["fixed"]) - cut(example["moving"])), f"|fixed − moving|, NCC {example['ncc_before']:.3f}",
               "magma", None),
              (np.abs(cut(example["fixed"]) - cut(example["warped"])), f"|fixed − warped|, NCC {example['ncc_after']:.3f}",
               "magma", None)]
    for ax, (image, title, cmap, label_key) in zip(axes, panels):
        ax.imshow(image, cmap=cmap, origin="lower", vmin=0, vmax=1 if cmap == "gray" else None)
        if label_key is not None and labelled:
            classes = int(example["num_classes"]) - 1
            ax.imshow(cut(example[label_key]), cmap=label_colormap(classes), origin="lower", vmin=0, vmax=classes,
                      alpha=0.4, interpolation="nearest")
            if label_key != "fixed_label":
                # the fixed subject's outlines on the moving and warped panels show what should line up
                ax.contour(cut(example["fixed_label"]) > 0, levels=[0.5], colors="white", linewidths=0.6)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    shown = axes[5].imshow(magnitude, cmap="viridis", origin="lower")
    step = max(1, magnitude.shape[0] // 12)
    u, v = cut(ddf[in_plane[0]])[::step, ::step], cut(ddf[in_plane[1]])[::step, ::step]
    rows, cols = np.mgrid[0:magnitude.shape[0]:step, 0:magnitude.shape[1]:step]
    # a backward map: each arrow points from a fixed voxel to where it samples the moving image
    axes[5].quiver(cols, rows, u, v, color="white", angles="xy", scale_units="xy", scale=1, width=0.004)
    axes[5].set_title("DVF (voxels): |u| and in-plane arrows", fontsize=8)
    axes[5].set_axis_off()
    fig.colorbar(shown, ax=axes[5], fraction=0.046)
    fig.suptitle("Registration of two held-out subjects by the pre-trained Z-matching head "
                 "(NCC loss: lower is better; white: the fixed subject's heart outline)", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- HTML

_READING_GUIDE = """Rows are backbone initialisations: <b>scratch</b> (random), <b>w/o Z-Matching</b> (restoration only,
Models-Genesis style), <b>w/o Fundament</b> (Z-matching only), <b>w/o Affine head</b> (restoration + deformable
matching) and <b>GVSL (whole)</b>. Protocol (a) trains only a head on the frozen backbone, so it measures what
pre-training put into the features; (b) fine-tunes everything. Compare each row with scratch (the gain table)
and with the paper's value in brackets. Values are means ± sample sd over every run (pre-training seed ×
transfer seed); † marks a cell whose validation curves did not plateau within the iteration cap. Gains are
paired by seed with a 95 % bootstrap interval over runs and test cases; * marks an interval that excludes 0."""

_CLAIMS_GUIDE = """Each claim is tested per task by a criterion fixed in advance (see <code>gvsl.report.claims</code>):
an interval wholly above 0 (or, for fine-tuning, wholly below the linear gain). "Not shown" means this run's
evidence does not establish the claim; it does not refute it."""


_PRETEXT_GUIDE = """Each variant with a Z-matching head registers pairs of subjects it never trained on (the SHC
analog's validation split on the default profile) every <code>pretrain.eval_every</code> iterations. Dice (percent)
compares the moving subject's labels, warped onto the fixed subject, with the fixed subject's labels: identity is
no warp, affine the affine part alone, warped the whole field. <code>warped_gain</code> is warped − identity with
its 95 % bootstrap interval over pre-training seeds and pairs. NCC values are the loss (lower is better) before
and after pre-training."""


def write_html(path: str | Path, table: pd.DataFrame, markdown: str, figures: Mapping[str, str],
               provenance: Mapping[str, Any], pretext: Mapping[str, Mapping[str, float]] | None = None,
               claims_table: str | None = None) -> Path:
    """One page: Table 1 (paper layout and ``table`` in long format), the paper's claims as this run
    shows them (:func:`claims_markdown`), the pretext task on held-out pairs (:func:`pretext_metrics`),
    the figures, what produced every number.

    ``table`` is normally :func:`with_sources` of :func:`table1`, so each row names its runs and commit.
    """
    import markdown_it  # shipped with the pipeline extra (via rich / jupyter); renders the Markdown tables

    body = [f"<h1>GVSL reproduction report — profile {html.escape(str(provenance.get('profile')))}</h1>",
            "<h2>Table 1</h2>", markdown_it.MarkdownIt().enable("table").render(markdown),
            f"<p>{_READING_GUIDE}</p>"]
    if claims_table:
        body += ["<h2>The paper's claims in this run</h2>", f"<p>{_CLAIMS_GUIDE}</p>",
                 markdown_it.MarkdownIt().enable("table").render(claims_table)]
    if pretext:
        body += ["<h2>The pretext task on held-out pairs</h2>", f"<p>{_PRETEXT_GUIDE}</p>",
                 pd.DataFrame(pretext).T.rename_axis("method").reset_index().to_html(index=False)]
    body.append("<h2>Figures</h2>")
    for name, src in figures.items():
        body.append(f"<figure><img src=\"{html.escape(src)}\" alt=\"{html.escape(name)}\" style=\"max-width:100%\">"
                    f"<figcaption>{html.escape(name)}</figcaption></figure>")
    body += ["<h2>Provenance</h2>", "<table>"]
    for key, value in provenance.items():
        body.append(f"<tr><th>{html.escape(str(key))}</th><td><code>{html.escape(json.dumps(value))}</code></td></tr>")
    body += ["</table>", "<h2>Every number, with its source</h2>", table.to_html(index=False, float_format="%.1f")]
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>GVSL reproduction report</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    path = Path(path)
    path.write_text(page)
    return path
