"""The report stage: every output of ``results/`` from the pipeline's build folder, in one call.

:func:`write_report` reads the transfer summaries and the pre-training runs, lays out Table 1 and the claims,
draws every figure of :data:`gvsl.report.page.FIGURE_CAPTIONS` into ``results/figures/report/``, and writes
``table1.csv``, ``table1.md``, ``claims.md``, ``label_efficiency.csv``, ``metrics.json`` and ``report.html``.
The report notebook calls it and shows what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import pyplot as plt

from gvsl.data import load_prepared
from gvsl.pipeline.config import Settings, as_settings
from gvsl.pipeline.layout import BUILD, prepared_dir, pretrain_dir
from gvsl.pretext import registration_example
from gvsl.report.figures import FIGURE7_METHODS, figure6_validation, figure7_tsne
from gvsl.report.label_efficiency import figure_label_efficiency, label_efficiency
from gvsl.report.page import FIGURE_CAPTIONS, FIGURE_FOLDER, write_html
from gvsl.report.paper_claims import claims, claims_markdown
from gvsl.report.pretext_task import (
    figure8_pretext,
    figure_pretext_losses,
    figure_registration,
    load_pretext,
    pretext_losses,
    pretext_metrics,
)
from gvsl.report.table import load_summaries, metrics_summary, provenance, table1, table1_markdown, with_sources
from gvsl.transfer.features import local_features

__all__ = ["Report", "write_report"]


@dataclass
class Report:
    """What the report stage wrote, for the notebook to show."""

    table: str
    claims: str
    losses: pd.DataFrame
    pretext: pd.DataFrame
    figures: dict[str, plt.Figure]
    provenance: dict[str, Any]
    page: Path
    label_efficiency: pd.DataFrame


def _figures(settings: Settings, summaries: pd.DataFrame, efficiency: pd.DataFrame, build: Path, pretrained: list[str]):
    seed = settings.pretrain.seeds[0]
    tsne = settings.report.tsne
    features = local_features(
        build / "pretrain",
        seed,
        FIGURE7_METHODS,
        prepared_dir("SHC", build),
        max_per_class=tsne.max_per_class,
        seed=tsne.seed,
    )
    example = registration_example(pretrain_dir("gvsl", build, seed) / "checkpoint.pt", prepared_dir("SHC", build))
    fig6 = settings.report.fig6
    return {
        "fig6_validation": figure6_validation(summaries, task=fig6.task, protocol=fig6.protocol),
        "fig7_tsne": figure7_tsne(features, load_prepared(prepared_dir("SHC", build)).info.classes, seed=tsne.seed),
        "pretext_losses": figure_pretext_losses(build / "pretrain", pretrained),
        "fig8_ncc": figure8_pretext(build / "pretrain"),
        "registration": figure_registration(example),
        "label_efficiency": figure_label_efficiency(efficiency),
    }


def write_report(
    settings: Settings | Mapping[str, Any], build: str | Path = BUILD, results: str | Path = "results"
) -> Report:
    """Write ``results/`` from ``build/`` with the pipeline's ``settings`` and return what it holds."""
    settings = as_settings(settings)
    build, results = Path(build), Path(results)
    figure_folder = results / FIGURE_FOLDER
    figure_folder.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(build / "transfer")
    table = table1(summaries, profile=settings.profile)
    table.to_csv(results / "table1.csv", index=False)
    markdown = table1_markdown(table)
    (results / "table1.md").write_text(markdown)
    pretrained = settings.pipeline.pretrained
    pretext = pretext_metrics(load_pretext(build / "pretrain"))
    losses = pretext_losses(build / "pretrain", pretrained)
    metrics = {**metrics_summary(table), "pretext": pretext, "pretext_loss": losses}
    (results / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    efficiency = label_efficiency(load_summaries(build / "transfer", label_fractions=True))
    efficiency.to_csv(results / "label_efficiency.csv", index=False)
    found = claims(table, summaries, finetune_claims=settings.report.finetune_claims)
    claims_table = claims_markdown(found)
    (results / "claims.md").write_text(claims_table)
    figures = _figures(settings, summaries, efficiency, build, pretrained)
    if set(figures) != set(FIGURE_CAPTIONS):
        raise AssertionError(f"the report draws {sorted(figures)}, its page captions {sorted(FIGURE_CAPTIONS)}")
    for name in FIGURE_CAPTIONS:
        figures[name].savefig(figure_folder / f"{name}.png", dpi=100, bbox_inches="tight")
    origin = provenance(summaries, settings)
    page = write_html(
        results / "report.html",
        with_sources(table, summaries),
        markdown,
        {name: f"{FIGURE_FOLDER}/{name}.png" for name in FIGURE_CAPTIONS},
        origin,
        pretext,
        claims_table,
        losses,
        claims=found,
    )
    losses_table, pretext_table = pd.DataFrame(losses).T, pd.DataFrame(pretext).T
    return Report(markdown, claims_table, losses_table, pretext_table, figures, origin, page, efficiency)
