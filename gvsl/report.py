"""Table 1 and Figures 6–8 of the paper, regenerated from the pipeline's outputs.

Inputs (written by :mod:`gvsl.pipeline`): one ``summary.json`` per transfer setting under
``build/transfer/<TASK>-<protocol>-<method>/`` (test metric per seed, validation curves, provenance)
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

__all__ = ["METHOD_NAMES", "PAPER_TABLE1", "figure6_validation", "figure7_tsne", "figure8_ncc",
           "figure_registration", "load_summaries", "local_features", "metrics_summary", "provenance",
           "registration_example", "table1", "table1_markdown", "with_sources", "write_html"]

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

_SUMMARY_KEYS = {"task", "protocol", "method", "metric", "seeds", "test", "mean", "sd", "n_seeds", "val_curves",
                 "dataset_source", "profile", "commit"}


# ------------------------------------------------------------------------------------------ Table 1


def load_summaries(transfer_root: str | Path) -> pd.DataFrame:
    """One row per transfer setting, from ``<transfer_root>/*/summary.json``."""
    root = Path(transfer_root)
    files = sorted(root.glob("*/summary.json"))
    if not files:
        raise GVSLInputError(f"{root}: no transfer results (*/summary.json); run the transfer stages first")
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
    """Long-format Table 1: ``method, protocol, task, metric, value, sd, n_seeds, paper_value, dataset, profile``.

    ``value``, ``sd`` and ``paper_value`` are percent; ``sd`` is over seeds (sample sd). Settings
    that were not run are absent.
    """
    rows = []
    for method in METHODS:
        for protocol in PROTOCOLS:
            for task in TASKS:
                found = summaries[(summaries["method"] == method) & (summaries["protocol"] == protocol)
                                  & (summaries["task"] == task)]
                if found.empty:
                    continue
                s = found.iloc[0]
                rows.append({"method": method, "protocol": protocol, "task": task, "metric": s["metric"],
                             "value": 100.0 * float(s["mean"]), "sd": 100.0 * float(s["sd"]),
                             "n_seeds": int(s["n_seeds"]), "paper_value": PAPER_TABLE1[(method, protocol, task)],
                             "dataset": s["dataset_source"], "profile": profile})
    return pd.DataFrame(rows, columns=["method", "protocol", "task", "metric", "value", "sd", "n_seeds",
                                       "paper_value", "dataset", "profile"])


def with_sources(table: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each row's seeds and commit added (for the report page; table1.csv keeps its columns)."""
    keys = ["method", "protocol", "task"]
    sources = summaries[[*keys, "seeds", "commit"]].assign(
        seeds=lambda frame: frame["seeds"].map(lambda seeds: ", ".join(str(s) for s in seeds)))
    return table.merge(sources, on=keys, how="left", validate="one_to_one")


def _cell(value: float, sd: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if math.isnan(sd) else f"{value:.1f} ± {sd:.1f}"


def table1_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """Table 1 laid out as in the paper: ours (± sd over seeds) with the paper's value, then gains over scratch."""
    columns = [(p, t) for p in PROTOCOLS for t in TASKS if ((table["protocol"] == p) & (table["task"] == t)).any()]
    lookup = {(r.method, r.protocol, r.task): r for r in table.itertuples()}
    header = "| method | " + " | ".join(f"{PROTOCOL_NAMES[p]} {t} {TASK_METRICS[t]}" for p, t in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, rule]
    for method in METHODS:
        cells = []
        for p, t in columns:
            row = lookup.get((method, p, t))
            cells.append("" if row is None else f"{_cell(row.value, row.sd)} (paper {row.paper_value:.1f})")
        if any(cells):
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    gains = [header.replace("| method |", "| gain over scratch (ours / paper) |"), rule]
    for method in METHODS[1:]:
        cells = []
        for p, t in columns:
            row, base = lookup.get((method, p, t)), lookup.get(("scratch", p, t))
            if row is None or base is None:
                cells.append("")
            else:
                cells.append(f"{row.value - base.value:+.1f} / {row.paper_value - base.paper_value:+.1f}")
        if any(cells):
            gains.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    head = [f"**Table 1.** {caption}".rstrip(), ""] if caption else []
    return "\n".join([*head, *lines, "", *gains]) + "\n"


def metrics_summary(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """``{protocol: {task: {method: percent}}}`` for ``dvc metrics show``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in table.itertuples():
        value = None if math.isnan(row.value) else round(float(row.value), 2)
        out.setdefault(row.protocol, {}).setdefault(row.task, {})[row.method] = value
    return out


def provenance(summaries: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    """What produced the numbers: profile, data sources, seeds, commits and the settings that matter."""
    return {
        "profile": params.get("profile"),
        "data sources": {task: sorted(set(summaries.loc[summaries["task"] == task, "dataset_source"]))
                         for task in TASKS if (summaries["task"] == task).any()},
        "seeds per protocol": {p: sorted({s for seeds in summaries.loc[summaries["protocol"] == p, "seeds"]
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
    frames = [pd.DataFrame(curve, columns=["iteration", "value"]).assign(seed=seed)
              for seed, curve in zip(found.iloc[0]["seeds"], found.iloc[0]["val_curves"])]
    return pd.concat(frames)


def figure6_validation(summaries: pd.DataFrame, task: str = "SHC", protocol: str = "finetune",
                       methods: Sequence[str] = ("scratch", "no_zmatch", "gvsl")) -> plt.Figure:
    """Validation metric vs iteration (mean over seeds, band = min–max), as the paper's Fig. 6."""
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


def local_features(pretrain_root: str | Path, methods: Sequence[str], dataset_path: str | Path,
                   max_per_class: int = 150, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Local features of each method's backbone at labelled voxels of the dataset's test cases."""
    from gvsl.checkpoint import load_backbone
    from gvsl.data import load_prepared
    from gvsl.transfer import extract_local_features

    cases = load_prepared(dataset_path).load_split("test")
    features = {}
    for method in methods:
        path = Path(pretrain_root) / method / "backbone.pt"
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


def figure8_ncc(pretrain_root: str | Path, variants: Sequence[str] = ("no_fundament", "gvsl"),
                smooth_window: int = 10) -> plt.Figure:
    """NCC loss vs pre-training iteration (raw, faint, and a moving average), as the paper's Fig. 8."""
    labels = {"no_fundament": "Z-matching only (w/o fundament)", "gvsl": "whole GVSL",
              "no_affine": "w/o affine head"}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for index, variant in enumerate(variants):
        path = Path(pretrain_root) / variant / "dvclive" / "plots" / "metrics" / "train" / "ncc.tsv"
        if not path.is_file():
            continue
        log = pd.read_csv(path, sep="\t")
        colour = f"C{index}"
        ax.plot(log["step"], log["ncc"], color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(log["step"], log["ncc"].rolling(smooth_window, min_periods=1).mean(), color=colour,
                label=labels.get(variant, variant))
    ax.set(xlabel="pre-training iteration", ylabel="NCC loss", title="Fig. 8 — NCC loss during pre-training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def registration_example(checkpoint_path: str | Path, dataset_path: str | Path,
                         ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Register two different cases with a pre-trained GVSL (fixed = view A, moving = image B).

    No augmentation, eval mode. Returns the volumes (fixed, moving, warped), the fused displacement
    field (3, D, H, W) in voxels, and the NCC loss before and after.
    """
    from gvsl.checkpoint import load_file
    from gvsl.data import load_prepared
    from gvsl.losses import local_ncc_loss
    from gvsl.nets import GVSL, GVSLConfig

    state = load_file(checkpoint_path)
    if "model_config" not in state or "model" not in state:
        raise GVSLInputError(f"{checkpoint_path}: not a pre-training checkpoint (needs model_config and model)")
    model = GVSL.from_config(GVSLConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    if not model.z_matching:
        raise GVSLInputError(f"{checkpoint_path}: this variant has no Z-matching head; nothing registers")
    dataset = load_prepared(dataset_path)
    chosen = list(ids) if ids is not None else list(dataset.ids("test"))[:2]
    if len(chosen) != 2 or chosen[0] == chosen[1]:
        raise GVSLInputError(f"registration_example needs two different cases, got {chosen}")
    fixed, moving = (torch.as_tensor(np.asarray(dataset.load_case(i).image, np.float32))[None, None] for i in chosen)
    if fixed.shape != moving.shape:
        raise GVSLInputError(f"cases {chosen} differ in shape: {tuple(fixed.shape)} vs {tuple(moving.shape)}")
    model.eval()
    with torch.no_grad():
        out = model(fixed, moving)
        before, after = float(local_ncc_loss(moving, fixed)), float(local_ncc_loss(out.warped, fixed))
    return {"ids": chosen, "fixed": fixed[0, 0].numpy(), "moving": moving[0, 0].numpy(),
            "warped": out.warped[0, 0].numpy(), "ddf": out.ddf[0].numpy(), "ncc_before": before, "ncc_after": after}


def figure_registration(example: Mapping[str, Any], axis: int = 2) -> plt.Figure:
    """Fixed, moving, warped, the differences before/after, and the DVF of the middle slice."""
    index = example["fixed"].shape[axis] // 2

    def cut(volume: np.ndarray) -> np.ndarray:
        return np.take(volume, index, axis=axis).T

    in_plane = [a for a in range(3) if a != axis]
    ddf = example["ddf"]
    magnitude = cut(np.linalg.norm(ddf, axis=0))
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
    panels = [(cut(example["fixed"]), f"fixed {example['ids'][0]}", "gray"),
              (cut(example["moving"]), f"moving {example['ids'][1]}", "gray"),
              (cut(example["warped"]), "warped moving", "gray"),
              (np.abs(cut(example["fixed"]) - cut(example["moving"])), f"|fixed − moving|, NCC {example['ncc_before']:.3f}",
               "magma"),
              (np.abs(cut(example["fixed"]) - cut(example["warped"])), f"|fixed − warped|, NCC {example['ncc_after']:.3f}",
               "magma")]
    for ax, (image, title, cmap) in zip(axes, panels):
        ax.imshow(image, cmap=cmap, origin="lower", vmin=0, vmax=1 if cmap == "gray" else None)
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
    fig.suptitle("Registration by the pre-trained Z-matching head (NCC loss: lower is better)", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- HTML

_READING_GUIDE = """Rows are backbone initialisations: <b>scratch</b> (random), <b>w/o Z-Matching</b> (restoration only,
Models-Genesis style), <b>w/o Fundament</b> (Z-matching only), <b>w/o Affine head</b> (restoration + deformable
matching) and <b>GVSL (whole)</b>. Protocol (a) trains only a head on the frozen backbone, so it measures what
pre-training put into the features; (b) fine-tunes everything. Compare each row with scratch (the gain table)
and with the paper's value in brackets. Values are means over seeds ± sample sd; a difference smaller than the
sds is noise."""


def write_html(path: str | Path, table: pd.DataFrame, markdown: str, figures: Mapping[str, str],
               provenance: Mapping[str, Any]) -> Path:
    """One page: Table 1 (paper layout and ``table`` in long format), the figures, what produced every number.

    ``table`` is normally :func:`with_sources` of :func:`table1`, so each row names its seeds and commit.
    """
    import markdown_it  # shipped with the pipeline extra (via rich / jupyter); renders the Markdown tables

    body = [f"<h1>GVSL reproduction report — profile {html.escape(str(provenance.get('profile')))}</h1>",
            "<h2>Table 1</h2>", markdown_it.MarkdownIt().enable("table").render(markdown),
            f"<p>{_READING_GUIDE}</p>",
            "<h2>Figures</h2>"]
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
