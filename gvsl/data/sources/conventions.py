"""The preprocessing path every builder shares: canonical orientation and resampling, the task's ROI,
the intensity window, label mapping, and what ``info.json`` records of the window.

Canonical RAS+ orientation, resampling to the target spacing (a no-op for generated volumes, which
are made on that grid), the task's ROI crop, then the intensity window (:mod:`gvsl.data.preprocess`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gvsl.data.dataset import DatasetInfo, DatasetWriter
from gvsl.data.io import Volume
from gvsl.data.preprocess import (
    CT_WINDOW_WIDTH,
    ROI,
    centred_roi,
    crop_or_pad,
    ct_window,
    foreground_box,
    minmax,
    resample,
    roi_shape,
    to_canonical,
)
from gvsl.errors import GVSLInputError

__all__ = [
    "MARGIN_MM",
    "PAPER_SPACING",
    "ROI_CENTRE_MM",
    "ROI_MM",
    "brain_crop",
    "cut_warning",
    "fixed_roi",
    "label_lut",
    "margin_voxels",
    "roi_shape",
    "standardise",
    "window",
    "window_info",
]

# Region-of-interest sizes in mm (converted to voxels at the target spacing) and box margins in mm.
# Real data: a 176 mm cube holds a whole heart with its great vessels plus an 8 mm margin; the lung box
# covers both lungs of an adult. Generated cohorts: a 200 mm heart box (40 voxels at 5 mm) and a
# 156×156×144 mm coronary box (52×52×48 voxels at 3 mm), both fixed boxes placed without labels
# (:data:`ROI_CENTRE_MM`), sized to hold every subject's heart / coronaries whatever its pose (seeds 0-199
# checked); 320×240×280 mm chest. CANDI: the paper's 160×160×128 crop at 1 mm. The MNI152 brain (an adult
# average, 146×180×148 mm labelled) rotated by up to 10° does not fit that crop, so mni-brain keeps a
# 168×204×168 mm box.
ROI_MM = {
    "heart": (176.0, 176.0, 176.0),
    "lung": (320.0, 256.0, 320.0),
    "brain": (160.0, 160.0, 128.0),
    "phantom-heart": (200.0, 200.0, 200.0),
    "phantom-coronary": (156.0, 156.0, 144.0),
    "phantom-lung": (320.0, 240.0, 280.0),
    "phantom-brain": (168.0, 204.0, 168.0),
}
#: centre (mm, RAS+, from the field of view's centre) of the generated cohorts' label-free ROIs: where the
#: heart's labels / the coronaries sit on average over subjects (the middle of their range over seeds 0-199)
ROI_CENTRE_MM = {"phantom-heart": (0.0, 30.0, 15.0), "phantom-coronary": (-10.0, 30.0, -5.0)}
MARGIN_MM = 8.0
PAPER_SPACING = (1.0, 1.0, 1.0)


def fixed_roi(
    image_shape: Sequence[int], spacing: Sequence[float], roi_mm: Sequence[float], centre_mm: Sequence[float]
) -> ROI:
    """A ``roi_mm`` box centred ``centre_mm`` from the field of view's centre: placed from the image grid
    alone (no labels, no image content), as a user's preprocessing of a new scan would place it."""
    shape = roi_shape(roi_mm, spacing)
    centre = (np.asarray(image_shape, float) - 1) / 2 + np.asarray(centre_mm, float) / np.asarray(spacing, float)
    start = np.floor(centre - (np.asarray(shape) - 1) / 2 + 0.5).astype(int)
    return tuple(int(b) for b in start), tuple(int(n) for n in shape)


def margin_voxels(spacing: Sequence[float]) -> int:
    """:data:`MARGIN_MM` in voxels of the finest axis of ``spacing``."""
    return int(round(MARGIN_MM / min(spacing)))


def label_lut(mapping: dict[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised original-value -> class-id mapping for values already checked to be in ``mapping``."""
    keys = np.array(sorted(mapping), dtype=np.int64)
    ids = np.array([mapping[k] for k in keys], dtype=np.uint8)

    def apply(values: np.ndarray) -> np.ndarray:
        return ids[np.searchsorted(keys, values.astype(np.int64))]

    return apply


def standardise(volume: Volume, spacing: Sequence[float], *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Canonical RAS+ orientation, then resampling to ``spacing`` (trilinear, or nearest for labels)."""
    array, affine = to_canonical(volume.array, volume.affine)
    return resample(array, affine, spacing, label=label)


def window(array: np.ndarray, modality: str, offset: float, name: str) -> np.ndarray:
    """The CT window (``ct``) or min-max (``mr``) of ``array``; ``name`` names it in errors."""
    return ct_window(array, offset) if modality == "ct" else minmax(array, name=name)


def finish_dataset(
    writer: DatasetWriter,
    req: Any,
    task: str,
    classes: Sequence[str],
    spacing: Sequence[float],
    window: tuple[str, float],
    generator: dict[str, Any],
    label_values: dict[str, int] | None = None,
) -> None:
    """Write a source's ``dataset.json`` and finish its prepared dataset: the task, its classes and voxel size,
    the request's source, the intensity ``window`` (modality, offset; :func:`window_info`), what reproduces
    the data (``generator``) and the source's label values where they were remapped."""
    info = DatasetInfo(
        task=task,
        classes=tuple(classes),
        spacing=spacing,
        source=req.source,
        window=window_info(*window),
        generator=generator,
        label_values=label_values or {},
    )
    writer.finish(info)


def window_info(modality: str, offset: float) -> dict[str, Any]:
    """What ``info.json`` records of :func:`window`."""
    if modality == "ct":
        width = f"{CT_WINDOW_WIDTH:g}"
        return {
            "kind": "ct",
            "offset": offset,
            "width": CT_WINDOW_WIDTH,
            "formula": f"clip(raw + offset, 0, {width}) / {width}",
        }
    return {"kind": "minmax", "formula": "(raw - min) / (max - min)"}


def cut_warning(cut: list[str], what: str) -> None:
    """Warn once for all the cases whose fixed crop lost labelled voxels."""
    if cut:
        shown = ", ".join(cut[:5]) + (", …" if len(cut) > 5 else "")
        warnings.warn(f"{what}: the fixed crop cut labelled voxels of {len(cut)} case(s): {shown}", stacklevel=3)


def brain_crop(
    image: Volume, label: Volume, spacing: Sequence[float], crop_shape: Sequence[int], case_id: str, cut: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CANDI-style crop: fixed size, centred on the labelled brain's bounding box, then min-max.

    Returns the image in [0, 1], the label and their affine; ``case_id`` is appended to ``cut`` when
    the crop loses labelled voxels.
    """
    image_array, affine = standardise(image, spacing)
    label_array, _ = standardise(label, spacing, label=True)
    box = foreground_box(label_array)
    if box is None:
        raise GVSLInputError(f"{label.path}: label volume is empty")
    roi = centred_roi(box, crop_shape, name=case_id, strict=False)
    # Pad with the image minimum so padding becomes 0 after min-max.
    image_array, out_affine = crop_or_pad(image_array, affine, roi, fill=float(image_array.min()))
    cropped_label, _ = crop_or_pad(label_array, affine, roi)
    if np.count_nonzero(cropped_label) < np.count_nonzero(label_array):
        cut.append(case_id)
    return minmax(image_array, name=str(image.path)), cropped_label, out_affine
