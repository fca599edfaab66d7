"""Slice views of volumes with label overlays (cohort previews, registration panels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

__all__ = ["cohort_figure", "label_colormap", "volume_figure"]

_VIEWS = ("sagittal", "coronal", "axial")


def label_colormap(num_classes: int) -> ListedColormap:
    """Class ``k`` → a distinct colour (tab10/tab20), class 0 transparent."""
    base = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    colours = [(0.0, 0.0, 0.0, 0.0)] + [base(i % base.N) for i in range(num_classes)]
    return ListedColormap(colours)


def _centre_slices(image: np.ndarray, label: np.ndarray | None) -> list[int]:
    """Slice indices through the labelled region's centre (the volume centre when unlabelled)."""
    if label is not None and np.any(label > 0):
        return [int(round(c)) for c in np.argwhere(label > 0).mean(axis=0)]
    return [s // 2 for s in image.shape]


def _slice_row(
    axes,
    image: np.ndarray,
    label: np.ndarray | None,
    centre: Sequence[int],
    window: Sequence[float],
    cmap: ListedColormap,
    classes: int,
    titles: Sequence[str],
    outline: np.ndarray | None = None,
) -> None:
    """Sagittal, coronal and axial slices through ``centre`` on three axes: ``image`` in grey within
    ``window``, ``label`` overlaid, the ``outline`` mask contoured."""
    for axis, (ax, title) in enumerate(zip(axes, titles)):
        cut = [slice(None)] * 3
        cut[axis] = centre[axis]
        ax.imshow(image[tuple(cut)].T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1])
        if label is not None:
            ax.imshow(
                label[tuple(cut)].T,
                cmap=cmap,
                origin="lower",
                vmin=0,
                vmax=classes,
                alpha=0.45,
                interpolation="nearest",
            )
        if outline is not None:
            ax.contour(outline[tuple(cut)].T, [0.5], colors="yellow", origin="lower")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()


def _class_legend(fig: plt.Figure, cmap: ListedColormap, names: Sequence[str]) -> None:
    handles = [Patch(color=cmap(k + 1), label=name) for k, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))


def cohort_figure(dataset: str | Path, count: int = 3, class_names: Sequence[str] | None = None) -> plt.Figure:
    """The first ``count`` cases of a prepared dataset: three orthogonal slices each, labels overlaid.

    Arrays are RAS+ (axis 0 → right, 1 → anterior, 2 → superior); panels are drawn in radiological
    habit with superior / anterior up.
    """
    from gvsl.data import load_prepared

    ds = load_prepared(dataset)
    names = list(class_names or ds.info.classes)
    ids = list(ds.manifest["id"])[:count]
    fig, axes = plt.subplots(len(ids), 3, figsize=(9, 3 * len(ids)), squeeze=False)
    cmap = label_colormap(max(len(names), 1))
    for row, case_id in zip(axes, ids):
        case = ds.load_case(case_id)
        image = np.asarray(case.image)
        label = None if case.label is None else np.asarray(case.label)
        target = "" if case.target is None else f", target {case.target}"
        _slice_row(
            row,
            image,
            label,
            _centre_slices(image, label),
            (0.0, 1.0),
            cmap,
            len(names),
            [f"{case_id} {view}{target}" for view in _VIEWS],
        )
    if label is not None and names:
        _class_legend(fig, cmap, names)
    else:
        fig.tight_layout()
    fig.suptitle(f"{ds.info.task} — {ds.info.source}", fontsize=10, y=1.0)
    return fig


def volume_figure(
    image: np.ndarray,
    label: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    outline: np.ndarray | None = None,
    window: Sequence[float] = (0.0, 1.0),
) -> plt.Figure:
    """One volume (a raw generated subject, say): three orthogonal slices through its labelled region's
    centre, in grey within ``window`` (HU for a raw CT), with ``label`` overlaid (classes 1..n named by
    ``class_names``) and the ``outline`` mask contoured; axes as :func:`cohort_figure`'s."""
    image = np.asarray(image)
    label = None if label is None else np.asarray(label)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    cmap = label_colormap(max(len(class_names), 1))
    _slice_row(
        axes,
        image,
        label,
        _centre_slices(image, label),
        window,
        cmap,
        len(class_names),
        _VIEWS,
        None if outline is None else np.asarray(outline),
    )
    if label is not None and class_names:
        _class_legend(fig, cmap, class_names)
    else:
        fig.tight_layout()
    return fig
