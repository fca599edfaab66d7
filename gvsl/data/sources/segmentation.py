"""Labelled image/label pairs to a segmentation dataset: the path MM-WHS, ASOCA and MSD share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gvsl.data.dataset import DatasetWriter
from gvsl.data.preprocess import centred_roi, crop_or_pad, foreground_box, roi_shape
from gvsl.data.sources.conventions import (
    PAPER_SPACING,
    ROI_MM,
    finish_dataset,
    label_lut,
    margin_voxels,
    standardise,
    window,
)
from gvsl.data.sources.discovery import read_pair, source_paths
from gvsl.data.sources.splits import PAPER_SPLITS, select, split_counts
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["segmentation_from_pairs"]


def segmentation_from_pairs(
    dest: Path,
    req: PrepareRequest,
    task: str,
    pairs,
    label_map: dict[int, int],
    classes: Sequence[str],
    roi_kind: str,
    generator: dict[str, Any],
) -> None:
    """Read, check, map labels, 1 mm³, crop (around the label box, when ``roi_kind`` names an ROI), window, write."""
    root = req.root_folder()
    spacing = req.target_spacing(PAPER_SPACING)
    offset = req.offset
    modality = generator.get("modality", "ct")
    splits = select([cid for cid, _, _ in pairs], req.subjects, req.seed, PAPER_SPLITS[task], f"{req.source} {root}")
    lut = label_lut(label_map)
    crop_shape = roi_shape(req.roi_mm or ROI_MM[roi_kind], spacing) if roi_kind else None
    margin = margin_voxels(spacing)
    writer = DatasetWriter(dest, task)
    chosen = [p for p in pairs if p[0] in splits]
    for case_id, image_path, label_path in req.progress_bar(chosen, f"{req.source} {task}"):
        image, label = read_pair(image_path, label_path, label_map)
        label.array = lut(label.array)
        image_array, affine = standardise(image, spacing)
        label_array, _ = standardise(label, spacing, label=True)
        if crop_shape is not None:
            box = foreground_box(label_array)
            if box is None:
                raise GVSLInputError(f"{label_path}: label volume is empty, no region of interest")
            roi = centred_roi(box, crop_shape, margin=margin, name=str(label_path))
            image_array, out_affine = crop_or_pad(window(image_array, modality, offset, str(image_path)), affine, roi)
            label_array, _ = crop_or_pad(label_array, affine, roi)
        else:
            image_array, out_affine = window(image_array, modality, offset, str(image_path)), affine
        sources = source_paths(root, image_path, label_path)
        writer.add(case_id, splits[case_id], image_array, out_affine, label=label_array, **sources)
    if crop_shape is not None:
        generator = {
            **generator,
            "roi": f"{roi_kind} label box",
            "roi_mm": list(req.roi_mm or ROI_MM[roi_kind]),
            "roi_shape": list(crop_shape),
            "margin_voxels": margin,
        }
    recorded = {
        "root": str(req.root),
        "seed": req.seed,
        "subjects": req.subjects,
        "split_counts": split_counts(splits),
        **generator,
    }
    label_values = {str(k): int(v) for k, v in label_map.items() if v}
    finish_dataset(writer, req, task, tuple(classes), spacing, (modality, offset), recorded, label_values)
