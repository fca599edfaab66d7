"""Figures 6 and 7: validation curves of the transfer runs and a t-SNE of the backbones' local features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from gvsl.methods import SCRATCH
from gvsl.table1 import FIGURE_NAMES, METHOD_NAMES, PROTOCOL_NAMES

#: the initialisations the paper's Fig. 6 (validation curves) and Fig. 7 (t-SNE) compare
FIGURE6_METHODS = (SCRATCH, "no_zmatch", "gvsl")
FIGURE7_METHODS = (SCRATCH, "no_zmatch", "no_fundament", "gvsl")


def _curves(summaries: pd.DataFrame, task: str, protocol: str, method: str) -> pd.DataFrame | None:
    found = summaries[
        (summaries["task"] == task) & (summaries["protocol"] == protocol) & (summaries["method"] == method)
    ]
    if found.empty:
        return None
    frames = [
        pd.DataFrame(curve, columns=["iteration", "value"]).assign(run=f"p{run[0]}-t{run[1]}")
        for run, curve in zip(found.iloc[0]["runs"], found.iloc[0]["val_curves"])
    ]
    return pd.concat(frames)


def figure6_validation(
    summaries: pd.DataFrame, task: str = "SHC", protocol: str = "finetune", methods: Sequence[str] = FIGURE6_METHODS
) -> plt.Figure:
    """Validation metric vs iteration (mean over runs, band = min–max), as the paper's Fig. 6.

    Each curve stops at the last validation that every run reached: runs that stop on a plateau end
    at different iterations, and a mean over the runs still going would jump where one stopped.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    metric = "metric"
    for method in methods:
        curves = _curves(summaries, task, protocol, method)
        if curves is None:
            continue
        shared_end = curves.groupby("run")["iteration"].max().min()
        stats = (
            curves[curves["iteration"] <= shared_end].groupby("iteration")["value"].agg(["mean", "min", "max"]) * 100
        )
        ax.plot(stats.index, stats["mean"], marker="o", label=METHOD_NAMES[method])
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2)
        metric = summaries.loc[summaries["task"] == task, "metric"].iloc[0]
    ax.set(xlabel="iteration", ylabel=f"validation {metric} (%)", title=f"Fig. 6 — {task}, {PROTOCOL_NAMES[protocol]}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figure_run_curves(summaries: Sequence[Mapping]) -> plt.Figure:
    """One panel per Table 1 cell of a transfer stage (its ``summary.json`` records): the validation curve
    of every (pre-training seed, transfer seed) run."""
    fig, axes = plt.subplots(1, len(summaries), figsize=(2.6 * len(summaries), 2.6), squeeze=False)
    for ax, summary in zip(axes[0], summaries):
        for (p, t), curve in zip(summary["runs"], summary["val_curves"]):
            ax.plot(*zip(*curve), marker=".", label=f"p{p}-t{t}")
        ax.set(
            title=f"{summary['task']} {summary['protocol']}",
            xlabel="iteration",
            ylabel=f"validation {summary['metric']}",
        )
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure7_tsne(
    features: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str], seed: int = 0
) -> plt.Figure:
    """t-SNE of the local feature per structure, one panel per initialisation (the paper's Fig. 7)."""
    from sklearn.manifold import TSNE

    from gvsl.viz import label_colormap

    fig, axes = plt.subplots(1, len(features), figsize=(3.4 * len(features), 3.6), squeeze=False)
    cmap = label_colormap(len(class_names))
    for ax, (method, (x, y)) in zip(axes[0], features.items()):
        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        # standardised features: t-SNE distances should not be dominated by one channel's scale
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
        embedded = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
        ax.scatter(embedded[:, 0], embedded[:, 1], c=[cmap(int(k)) for k in y], s=5)
        ax.set_title(FIGURE_NAMES.get(method, method), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=cmap(k + 1), label=n) for k, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 7), fontsize=7, frameon=False)
    fig.suptitle("Fig. 7 — t-SNE of the local feature f^l per heart structure", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
