"""The HTML report page."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

_READING_GUIDE = """Rows are backbone initialisations: <b>scratch</b> (random), the self-supervised baselines (each
pre-trained on the same data, crops, schedule and seeds; see <code>gvsl.methods</code>), then GVSL's ablations
<b>w/o Z-Matching</b> (restoration only), <b>w/o Fundament</b> (Z-matching only), <b>w/o Affine head</b>
(restoration + deformable matching) and <b>GVSL (whole)</b>. Protocol (a) trains only a head on the frozen backbone,
so it measures what
pre-training put into the features; (b) fine-tunes everything. Compare each row with scratch (the gain table)
and with the paper's value in brackets. Values are means ± sample sd over every run (pre-training seed ×
transfer seed); † marks a cell whose validation curves did not plateau within the iteration cap. Gains are
paired by seed (each pre-training seed's run has its own transfer seed) with a 95 % Student t interval over
pre-training seeds and test cases (about the gain expected for new seeds and new test cases of the cohort;
<code>gvsl.stats</code>); * marks an interval that excludes 0, per cell and not corrected for multiplicity;
‡ marks a gain over fewer than 5 pre-training seeds, which has no interval."""

_CLAIMS_GUIDE = """Each claim is tested per task by a criterion fixed in advance (see <code>gvsl.report.claims</code>):
its interval, corrected by Holm's method across every tested claim of the report (family-wise error 5 %),
lies wholly above 0. The fine-tune claim is the linear gain minus the fine-tune gain, paired per seed. A claim
over fewer than 5 pre-training seeds is not tested. "Not shown" means this run's evidence does not establish
the claim; it does not refute it."""


_LOSS_GUIDE = """Each pre-trained method's own loss: on its training crops (first and last tenth of the iterations)
and on crops of held-out subjects with fixed augmentations (before training and at the end). A held-out loss
that falls says the method learned its pretext task beyond the crops it trained on. DeepCluster's loss is
measured against clusters that change at every re-clustering, so its curve is read per clustering."""

_PRETEXT_GUIDE = """Each variant with a Z-matching head registers pairs of subjects it never trained on (the SHC
analog's validation split on the default profile) every <code>pretrain.eval_every</code> iterations. Dice (percent)
compares the moving subject's labels, warped onto the fixed subject, with the fixed subject's labels: identity is
no warp, affine the affine part alone, warped the whole field. <code>warped_gain</code> is warped − identity with
its 95 % Student t interval over pre-training seeds and held-out subjects (none with fewer than 5 seeds). NCC values
are the loss (lower is better) before
and after pre-training."""


#: where the report's figures go, relative to ``results/`` and to the page (``dvc.yaml`` names the folder)
FIGURE_FOLDER = "figures/report"
#: every figure the report stage draws (:func:`gvsl.report.build.write_report`), in page order, with what it
#: shows as its caption
FIGURE_CAPTIONS = {
    "fig6_validation": (
        "Fig. 6: validation score during transfer (report.fig6's task and protocol), mean ± sd over runs"
    ),
    "fig7_tsne": "Fig. 7: t-SNE of the local features, coloured by heart structure",
    "pretext_losses": "Each pre-trained method's own loss, on its training crops and on held-out subjects",
    "fig8_ncc": "Fig. 8: NCC loss during pre-training, and the registration of held-out pairs",
    "registration": "A held-out pair registered by the pre-trained Z-matching head",
    "label_efficiency": (
        "Label efficiency: test score against the fraction of labelled training cases (their number below it), "
        "mean over runs with its 95 % interval over pre-training seeds and test cases (label_efficiency.csv)"
    ),
}
# Wide tables scroll inside their own box, so the page keeps its column; one line per row keeps them legible.
_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}.wide{overflow-x:auto}"
    ".wide td,.wide th{white-space:nowrap}code{overflow-wrap:anywhere}img{max-width:100%}"
)


def _wide(table_html: str) -> str:
    return f'<div class="wide">{table_html}</div>'


#: columns that count things (shown as integers)
_COUNTS = ("seeds", "iterations", "subjects", "pairs")


def _frame_html(frame: pd.DataFrame, **kwargs) -> str:
    """A table whose empty cells read "—" and whose counts read as integers."""
    frame = frame.copy()
    for column in _COUNTS:
        if column in frame:
            frame[column] = [
                "—" if pd.isna(value) else str(round(float(value))) for value in pd.to_numeric(frame[column])
            ]
    return _wide(frame.to_html(index=False, na_rep="—", **kwargs))


def _setting_rows(value: Any, name: str = "") -> list[tuple[str, str]]:
    """Nested settings as (dotted name, value) rows; lists of scalars on one row."""
    if isinstance(value, Mapping) and value:
        return [
            row for key, item in value.items() for row in _setting_rows(item, f"{name}.{key}" if name else str(key))
        ]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return [row for i, item in enumerate(value) for row in _setting_rows(item, f"{name}[{i}]")]
    if isinstance(value, list) and value:
        return [(name, ", ".join(str(v) for v in value))]
    return [(name, "—" if value is None or value == [] or value == {} else str(value))]


def _settings_table(provenance: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td><code>{html.escape(value)}</code></td></tr>"
        for key, value in _setting_rows(provenance)
    )
    return _wide(f"<table>{rows}</table>")


def _summary(provenance: Mapping[str, Any], claims: pd.DataFrame | None) -> str:
    """What the run is and what it shows, in a few lines at the top of the page."""
    sources = provenance.get("data sources") or {}
    data = "; ".join(f"{task}: {', '.join(found)}" for task, found in sources.items()) or "—"
    seeds = provenance.get("pre-training seeds") or []
    items = [
        f"<li><b>Profile</b> {html.escape(str(provenance.get('profile')))}; <b>data</b> {html.escape(data)}; "
        f"<b>pre-training seeds</b> {len(seeds)} ({html.escape(', '.join(str(s) for s in seeds))}); "
        f"<b>commits</b> {html.escape(', '.join(provenance.get('commits') or []))}.</li>"
    ]
    if claims is not None and len(claims):
        tested = claims[claims["tested"].astype(bool)]
        shown = tested[tested["shown"].astype(bool)]
        verdict = f"<b>{len(shown)} of {len(tested)}</b> tested claims are shown (Holm-corrected, 5 %)"
        untested = len(claims) - len(tested)
        if untested:
            verdict += f"; {untested} not tested"
        items.append(f"<li>{verdict}.</li>")
        for row in shown.itertuples():
            items.append(
                f"<li>Shown: {html.escape(row.claim)}, {html.escape(row.task)}: {row.estimate:+.1f} "
                f"[{row.low_adj:+.1f}, {row.high_adj:+.1f}] (corrected interval).</li>"
            )
        if tested.empty or shown.empty:
            items.append("<li>Not shown is not refuted: the claims section gives every estimate and interval.</li>")
    return "<h2>Summary</h2><ul>" + "".join(items) + "</ul>"


def write_html(
    path: str | Path,
    table: pd.DataFrame,
    markdown: str,
    figures: Mapping[str, str],
    provenance: Mapping[str, Any],
    pretext: Mapping[str, Mapping[str, float]] | None = None,
    claims_table: str | None = None,
    losses: Mapping[str, Mapping[str, float]] | None = None,
    claims: pd.DataFrame | None = None,
) -> Path:
    """One page: a summary (profile, data, which claims are shown), Table 1 (paper layout and ``table`` in long
    format), the paper's claims as this run shows them (:func:`claims_markdown`; ``claims`` is the frame it
    was made from), every method's pretext loss (:func:`pretext_losses`), the pretext task on held-out pairs
    (:func:`pretext_metrics`), the figures, what produced every number.

    ``table`` is normally :func:`with_sources` of :func:`table1`, so each row names its runs and commit.
    """
    import markdown_it  # shipped with the pipeline extra (via rich / jupyter); renders the Markdown tables

    body = [
        f"<h1>GVSL reproduction report — profile {html.escape(str(provenance.get('profile')))}</h1>",
        _summary(provenance, claims),
        "<h2>Table 1</h2>",
        markdown_it.MarkdownIt().enable("table").render(markdown),
        f"<p>{_READING_GUIDE}</p>",
    ]
    if claims_table:
        body += [
            "<h2>The paper's claims in this run</h2>",
            f"<p>{_CLAIMS_GUIDE}</p>",
            markdown_it.MarkdownIt().enable("table").render(claims_table),
        ]
    if losses:
        body += [
            "<h2>Pre-training losses</h2>",
            f"<p>{_LOSS_GUIDE}</p>",
            _frame_html(pd.DataFrame(losses).T.rename_axis("method").reset_index()),
        ]
    if pretext:
        body += [
            "<h2>Registration of held-out pairs</h2>",
            f"<p>{_PRETEXT_GUIDE}</p>",
            _frame_html(pd.DataFrame(pretext).T.rename_axis("method").reset_index()),
        ]
    body.append("<h2>Figures</h2>")
    for name, src in figures.items():
        caption = FIGURE_CAPTIONS.get(name, name)
        body.append(
            f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    body += [
        "<h2>Provenance and settings</h2>",
        _settings_table(provenance),
        "<h2>Every number, with its source</h2>",
        _frame_html(table, float_format="%.1f"),
    ]
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>GVSL reproduction report</title>'
        f"<style>{_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    path = Path(path)
    path.write_text(page)
    return path
