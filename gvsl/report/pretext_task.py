"""The pretext task (registering pairs of subjects) as the report reads and draws it: held-out metrics and the
training curves of Figure 8 from ``build/pretrain/<method>/seed<N>/`` (``pretext.json``, DVCLive logs), and the
drawing of one registered example (:func:`gvsl.pretext.registration_example` registers it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gvsl.errors import GVSLInputError
from gvsl.table1 import FIGURE_NAMES, METHOD_NAMES, REGISTERING

#: the variants with a Z-matching head as Fig. 8's legend names them; Z-matching only by its row title too
PRETEXT_LABELS = {key: FIGURE_NAMES[key] for key in REGISTERING}
PRETEXT_LABELS["no_fundament"] = f"{FIGURE_NAMES['no_fundament']} ({METHOD_NAMES['no_fundament'].lower()})"
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
    ``heldout_ncc_last``, ``warped_gain`` (warped − identity Dice) and ``affine_gain`` (the affine part alone
    − identity) with their 95 % intervals (``*_low``, ``*_high``; Student t over pre-training seeds and held-out
    subjects, as Table 1's gains: :func:`gvsl.stats.seed_case_interval` with subjects as the jackknife's unit;
    None with fewer than :data:`gvsl.stats.MIN_SEEDS` seeds), and with an affine head its scores on known
    misalignments (:func:`_misalignment_columns`), all in percent except the NCC losses and distances (voxels)."""

    out: dict[str, dict[str, float]] = {}
    for method, records in pretext.items():
        last = [r["last"]["per_pair"] for r in records]
        row = {
            "seeds": len(records),
            "iterations": int(records[0]["iterations"]),
            "heldout_ncc_first": round(float(np.mean([r["first"]["mean"]["ncc"] for r in records])), 4),
            "heldout_ncc_last": round(float(np.mean([r["last"]["mean"]["ncc"] for r in records])), 4),
        }
        for key in PRETEXT_KEYS:
            if all(key in p for p in last):
                row[key] = round(100 * float(np.mean([p[key] for p in last])), 2)
        pairs = [tuple(p) for p in records[0]["pairs"]]
        if any([tuple(p) for p in r["pairs"]] != pairs for r in records):
            raise GVSLInputError(f"{method}: its seeds were evaluated on different held-out pairs")
        subjects = sorted({s for p in pairs for s in p})
        index = {s: i for i, s in enumerate(subjects)}
        row["subjects"], row["pairs"] = len(subjects), len(pairs)
        for registered in ("warped", "affine"):
            if all(f"{registered}_dice" in p for p in last):
                gain = 100 * (
                    np.array([p[f"{registered}_dice"] for p in last]) - np.array([p["identity_dice"] for p in last])
                )
                # ordered pairs of a few subjects are not independent: the jackknife leaves out subjects, not pairs
                row.update(_interval_columns(f"{registered}_gain", gain, [(index[a], index[b]) for a, b in pairs]))
        known = [r["last"].get("misalignment") for r in records]
        if all(known):
            row.update(_misalignment_columns(known))
        out[method] = row
    return out


def _interval_columns(name: str, values: np.ndarray, pair_subjects: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """``name``, ``name_low`` and ``name_high`` of a (seeds, pairs) table: the mean and its interval, with the
    subjects as the jackknife's unit (:func:`gvsl.stats.seed_case_interval`); None bounds (JSON has no NaN)
    with fewer than :data:`gvsl.stats.MIN_SEEDS` seeds."""
    from gvsl.stats import seed_case_interval, subject_deletion

    mean, low, high = seed_case_interval(*subject_deletion(values, pair_subjects))
    bound = lambda value: None if np.isnan(value) else round(value, 2)  # noqa: E731
    return {name: round(mean, 2), f"{name}_low": bound(low), f"{name}_high": bound(high)}


def _misalignment_columns(known: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The affine head on known misalignments (one per held-out subject, :func:`gvsl.pretext.misaligned_pairs`),
    means over seeds: the share of the displacement it removes (``misalignment_recovered``, percent, with its
    interval), the affine part's Dice gain over leaving the copy where it is, and the correlation of its
    translations with the true ones, pooled over seeds and subjects."""
    subjects = known[0]["subjects"]
    if any(k["subjects"] != subjects for k in known):
        raise GVSLInputError("the seeds' known misalignments were drawn for different held-out subjects")
    per_seed = [k["per_pair"] for k in known]
    one_each = [(i, i) for i in range(len(subjects))]
    recovered = 100 * (
        1 - np.array([p["error_affine"] for p in per_seed]) / np.array([p["error_identity"] for p in per_seed])
    )
    columns = {
        **_interval_columns("misalignment_recovered", recovered, one_each),
        "misalignment_error_identity": round(float(np.mean([p["error_identity"] for p in per_seed])), 2),
        "misalignment_error_affine": round(float(np.mean([p["error_affine"] for p in per_seed])), 2),
    }
    if all("affine_dice" in p for p in per_seed):
        gain = 100 * (np.array([p["affine_dice"] for p in per_seed]) - np.array([p["identity_dice"] for p in per_seed]))
        columns.update(_interval_columns("misalignment_affine_gain", gain, one_each))
    true = np.concatenate([np.ravel(p["true_translation"]) for p in per_seed])
    predicted = np.concatenate([np.ravel(p["predicted_translation"]) for p in per_seed])
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = float(np.corrcoef(true, predicted)[0, 1])
    columns["misalignment_translation_r"] = None if np.isnan(correlation) else round(correlation, 3)
    return columns


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


def figure_training_terms(pretrain_root: str | Path, method: str, smooth_window: int = 10) -> plt.Figure | None:
    """Every training loss term of ``method`` per seed (:func:`training_terms`, moving average), one panel each;
    None for a method that never trained (scratch)."""
    terms = training_terms(pretrain_root, method)
    if terms.empty:
        return None
    axes = (
        terms.rolling(smooth_window, min_periods=1)
        .mean()
        .plot(
            subplots=True,
            figsize=(7, 1.6 * terms.shape[1]),
            title=f"{method}: loss terms (moving average of {smooth_window})",
        )
    )
    return axes[0].figure


def _mean_curve(pretrain_root: str | Path, method: str, metric: str) -> pd.Series | None:
    """Mean over seeds of a DVCLive metric (``train/ncc``, ``heldout/warped_dice``…)."""
    curves = [c for f in _seed_folders(pretrain_root, method) if (c := _dvclive_curve(f, metric)) is not None]
    return pd.concat(curves, axis=1).mean(axis=1) if curves else None


def _comparable(method: str) -> bool:
    from gvsl.methods import PRETRAIN_METHODS

    return method not in PRETRAIN_METHODS or PRETRAIN_METHODS[method].comparable_heldout_loss


def pretext_losses(pretrain_root: str | Path, methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per pre-trained method, its own loss on the held-out crops (``heldout_loss/total``, fixed
    augmentations) before training and at the end, and the training loss over the first and last
    tenth of the iterations; means over seeds. ``falls``: the held-out loss ended below where it began
    (None for a method whose held-out losses are not comparable over iterations, DeepCluster's).

    Methods without held-out evaluations (no DVCLive ``heldout_loss`` log) are left out.
    """
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        heldout = _mean_curve(pretrain_root, method, "heldout_loss/total")
        train = _mean_curve(pretrain_root, method, "train/total")
        if heldout is None or train is None or heldout.empty:
            continue
        tenth = max(1, len(train) // 10)
        out[method] = {
            "seeds": len(_seed_folders(pretrain_root, method)),
            "heldout_loss_first": round(float(heldout.iloc[0]), 4),
            "heldout_loss_last": round(float(heldout.iloc[-1]), 4),
            "train_loss_first_tenth": round(float(train.iloc[:tenth].mean()), 4),
            "train_loss_last_tenth": round(float(train.iloc[-tenth:].mean()), 4),
            "falls": bool(heldout.iloc[-1] < heldout.iloc[0]) if _comparable(method) else None,
        }
    return out


def figure_pretext_losses(
    pretrain_root: str | Path, methods: Sequence[str], titles: Mapping[str, str] = METHOD_NAMES, smooth_window: int = 10
) -> plt.Figure:
    """One panel per pre-trained method: its training loss (moving average, mean over seeds) and its loss
    on the held-out crops (markers), against the iteration. Each method's loss has its own scale."""
    shown = [m for m in methods if _mean_curve(pretrain_root, m, "train/total") is not None]
    if not shown:
        raise GVSLInputError(f"{pretrain_root}: no pre-training logs of {list(methods)}")
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.0 * rows), squeeze=False)
    for ax, method in zip(axes.flat, shown):
        train = _mean_curve(pretrain_root, method, "train/total")
        ax.plot(train.index, train, color="C0", alpha=0.2, linewidth=0.8)
        ax.plot(train.index, train.rolling(smooth_window, min_periods=1).mean(), color="C0", label="training")
        heldout = _mean_curve(pretrain_root, method, "heldout_loss/total")
        if heldout is not None:
            ax.plot(heldout.index, heldout, color="C3", marker="o", label="held-out subjects")
        ax.set(title=titles.get(method, method), xlabel="pre-training iteration", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def figure8_pretext(
    pretrain_root: str | Path, variants: Sequence[str] = tuple(PRETEXT_LABELS), smooth_window: int = 10
) -> plt.Figure:
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
            ax.axhline(
                scale * float(identity[metric].mean()),
                color="black",
                linestyle="--",
                linewidth=1,
                label="identity (no registration)",
            )
    titles = ("Fig. 8 — training NCC loss", "held-out pairs: NCC loss", "held-out pairs: warped-label Dice")
    ylabels = ("NCC loss (moving average)", "NCC loss", "mean Dice of warped labels (%)")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set(xlabel="pre-training iteration", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


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
    panels = [
        (cut(example["fixed"]), f"fixed {example['ids'][0]}", "gray", "fixed_label"),
        (cut(example["moving"]), f"moving {example['ids'][1]}{dice('before')}", "gray", "moving_label"),
        (cut(example["warped"]), f"warped moving{dice('after')}", "gray", "warped_label"),
        (
            np.abs(cut(example["fixed"]) - cut(example["moving"])),
            f"|fixed − moving|, NCC {example['ncc_before']:.3f}",
            "magma",
            None,
        ),
        (
            np.abs(cut(example["fixed"]) - cut(example["warped"])),
            f"|fixed − warped|, NCC {example['ncc_after']:.3f}",
            "magma",
            None,
        ),
    ]
    for ax, (image, title, cmap, label_key) in zip(axes, panels):
        ax.imshow(image, cmap=cmap, origin="lower", vmin=0, vmax=1 if cmap == "gray" else None)
        if label_key is not None and labelled:
            classes = int(example["num_classes"]) - 1
            ax.imshow(
                cut(example[label_key]),
                cmap=label_colormap(classes),
                origin="lower",
                vmin=0,
                vmax=classes,
                alpha=0.4,
                interpolation="nearest",
            )
            if label_key != "fixed_label":
                # the fixed subject's outlines on the moving and warped panels show what should line up
                ax.contour(cut(example["fixed_label"]) > 0, levels=[0.5], colors="white", linewidths=0.6)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    shown = axes[5].imshow(magnitude, cmap="viridis", origin="lower")
    step = max(1, magnitude.shape[0] // 12)
    u, v = cut(ddf[in_plane[0]])[::step, ::step], cut(ddf[in_plane[1]])[::step, ::step]
    rows, cols = np.mgrid[0 : magnitude.shape[0] : step, 0 : magnitude.shape[1] : step]
    # a backward map: each arrow points from a fixed voxel to where it samples the moving image
    axes[5].quiver(cols, rows, u, v, color="white", angles="xy", scale_units="xy", scale=1, width=0.004)
    axes[5].set_title("DVF (voxels): |u| and in-plane arrows", fontsize=8)
    axes[5].set_axis_off()
    fig.colorbar(shown, ax=axes[5], fraction=0.046)
    fig.suptitle(
        "Registration of two held-out subjects by the pre-trained Z-matching head "
        "(NCC loss: lower is better; white: the fixed subject's heart outline)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
