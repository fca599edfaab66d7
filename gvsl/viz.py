"""Slice views of volumes with label overlays (cohort previews, registration panels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

__all__ = ["cohort_figure", "label_colormap"]


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
        centre = _centre_slices(image, label)
        for axis, (ax, title) in enumerate(zip(row, ("sagittal", "coronal", "axial"))):
            cut = [slice(None)] * 3
            cut[axis] = centre[axis]
            ax.imshow(image[tuple(cut)].T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0)
            if label is not None:
                ax.imshow(label[tuple(cut)].T, cmap=cmap, origin="lower", vmin=0, vmax=len(names), alpha=0.45,
                          interpolation="nearest")
            target = "" if case.target is None else f", target {case.target}"
            ax.set_title(f"{case_id} {title}{target}", fontsize=8)
            ax.set_axis_off()
    if label is not None and names:
        handles = [Patch(color=cmap(k + 1), label=name) for k, name in enumerate(names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    fig.suptitle(f"{ds.info.task} — {ds.info.source}", fontsize=10, y=1.0)
    return fig
