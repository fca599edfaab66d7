"""Table 1 and Figures 6–8 of the paper, regenerated from the pipeline's outputs.

Inputs (written by :mod:`gvsl.pipeline`): one ``summary.json`` per transfer setting under
``build/transfer/<method>/<TASK>-<protocol>/`` (test metric and per-case scores per run, validation
curves, whether they plateaued, provenance)
and one folder per method under ``build/pretrain/`` (``backbone.pt``, ``checkpoint.pt``, DVCLive logs).
Outputs are pandas tables, Markdown, matplotlib figures and one HTML page; the report notebook saves
them under ``results/``.

- :mod:`gvsl.report.table` — the transfer summaries, Table 1, its gains over scratch, metrics and provenance.
- :mod:`gvsl.report.paper_claims` — the paper's claims, tested per task, corrected for multiplicity (Holm).
- :mod:`gvsl.report.figures` — Figures 6 and 7 (validation curves, t-SNE of local features).
- :mod:`gvsl.report.label_efficiency` — the transfer scores against the fraction of labelled training cases.
- :mod:`gvsl.report.pretext_task` — the pretext task: held-out metrics, Figure 8, a registered example drawn.

The report reads and draws; what runs a network (local features: :func:`gvsl.transfer.local_features`; a
registration: :func:`gvsl.pretext.registration_example`) lives in the compute packages.
- :mod:`gvsl.report.page` — the HTML page.
- :mod:`gvsl.report.build` — the report stage: all of the above written to ``results/`` in one call.
"""

# Importable from here besides __all__: PROTOCOL_NAMES, TASK_METRICS and PRETEXT_KEYS. Table 1's vocabulary
# (method names, paper values, ablations) is gvsl.table1's, re-exported.
from gvsl.report.build import Report, write_report
from gvsl.report.figures import FIGURE7_METHODS, figure6_validation, figure7_tsne, figure_run_curves
from gvsl.report.label_efficiency import LABEL_EFFICIENCY_COLUMNS, figure_label_efficiency, label_efficiency
from gvsl.report.page import write_html
from gvsl.report.paper_claims import ALPHA, CLAIMS_COLUMNS, FINETUNE_CLAIM, claims, claims_markdown
from gvsl.report.pretext_task import (  # noqa: F401
    PRETEXT_KEYS,
    PRETEXT_LABELS,
    figure8_pretext,
    figure_pretext_losses,
    figure_registration,
    figure_training_terms,
    load_pretext,
    pretext_losses,
    pretext_metrics,
    training_terms,
)
from gvsl.report.table import (
    TABLE1_COLUMNS,
    cell_overview,
    gain_interval,
    load_summaries,
    metrics_summary,
    provenance,
    table1,
    table1_markdown,
    with_sources,
)
from gvsl.table1 import ABLATIONS, METHOD_NAMES, PAPER_TABLE1, PROTOCOL_NAMES, TASK_METRICS  # noqa: F401

__all__ = [
    "ABLATIONS",
    "ALPHA",
    "CLAIMS_COLUMNS",
    "FIGURE7_METHODS",
    "FINETUNE_CLAIM",
    "LABEL_EFFICIENCY_COLUMNS",
    "METHOD_NAMES",
    "PAPER_TABLE1",
    "PRETEXT_LABELS",
    "TABLE1_COLUMNS",
    "Report",
    "cell_overview",
    "claims",
    "claims_markdown",
    "figure6_validation",
    "figure7_tsne",
    "figure8_pretext",
    "figure_label_efficiency",
    "figure_pretext_losses",
    "figure_registration",
    "figure_run_curves",
    "figure_training_terms",
    "gain_interval",
    "label_efficiency",
    "load_pretext",
    "load_summaries",
    "metrics_summary",
    "pretext_losses",
    "pretext_metrics",
    "provenance",
    "table1",
    "table1_markdown",
    "training_terms",
    "with_sources",
    "write_html",
    "write_report",
]
