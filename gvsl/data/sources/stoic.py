"""STOIC 2021 (chest CT with COVID-19 labels in ``reference.csv``): the paper profile's CCC dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gvsl.data.dataset import DatasetWriter
from gvsl.data.io import read_volume, volume_suffix
from gvsl.data.preprocess import centred_roi, crop_or_pad, ct_window, foreground_box, lung_mask, roi_shape
from gvsl.data.sources.conventions import PAPER_SPACING, ROI_MM, finish_dataset, margin_voxels, standardise
from gvsl.data.sources.discovery import unique_ids, visible
from gvsl.data.sources.splits import PAPER_SPLITS, select, split_counts
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["STOIC_COLUMNS", "build_stoic"]

STOIC_COLUMNS = ("PatientID", "probCOVID", "probSevere")


def _stoic_reference(root: Path) -> tuple[Path, dict[str, int]]:
    found = visible(root.rglob("reference.csv"))
    if len(found) != 1:
        raise GVSLInputError(f"{root}: expecting one reference.csv (STOIC metadata), found {len(found)}")
    path = found[0]
    try:
        table = pd.read_csv(path, dtype={"PatientID": str})
    except Exception as err:  # pandas parser errors of several types
        raise GVSLInputError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in STOIC_COLUMNS if c not in table.columns]
    if missing:
        raise GVSLInputError(f"{path}: missing columns {missing} (expecting {list(STOIC_COLUMNS)})")
    targets: dict[str, int] = {}
    for patient, covid in zip(table["PatientID"].str.strip(), table["probCOVID"]):
        if covid not in (0, 1):
            raise GVSLInputError(f"{path}: PatientID {patient}: probCOVID {covid!r} is not 0 or 1")
        targets[patient] = int(covid)
    return path, targets


def _stoic_images(root: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in visible(root.rglob("*")):
        if volume_suffix(path) in (".mha", ".mhd"):
            unique_ids(images, path, path.name[: -len(volume_suffix(path))])
    if not images:
        raise GVSLInputError(f"{root}: no STOIC images found (looked for *.mha, *.mhd)")
    return images


def build_stoic(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    images = _stoic_images(root)
    reference, targets = _stoic_reference(root)
    # Check every case before any volume is read: a missing row should not surface after hours.
    for case_id, path in sorted(images.items()):
        if case_id not in targets:
            raise GVSLInputError(f"{path}: no row for PatientID {case_id} in {reference}")
    splits = select(list(images), req.subjects, req.seed, PAPER_SPLITS[task], f"stoic {root}")
    spacing = req.target_spacing(PAPER_SPACING)
    offset = req.offset
    roi_mm = req.roi_mm or ROI_MM["lung"]
    crop_shape = roi_shape(roi_mm, spacing)
    margin = margin_voxels(spacing)
    writer = DatasetWriter(dest, task)
    for case_id in req.progress_bar(sorted(splits), "stoic CCC"):
        volume = read_volume(images[case_id])
        hu, affine = standardise(volume, spacing)
        box = foreground_box(lung_mask(hu))
        if box is None:
            raise GVSLInputError(f"{images[case_id]}: no lungs found by thresholding (is it a chest CT in HU?)")
        roi = centred_roi(box, crop_shape, margin=margin, name=str(images[case_id]), strict=False)
        image, out_affine = crop_or_pad(ct_window(hu, offset), affine, roi)
        writer.add(
            case_id,
            splits[case_id],
            image,
            out_affine,
            target=targets[case_id],
            source_image=str(images[case_id].relative_to(root)),
        )
    recorded = {
        "dataset": "STOIC 2021",
        "root": str(req.root),
        "seed": req.seed,
        "subjects": req.subjects,
        "reference": str(reference.relative_to(root)),
        "target": "probCOVID",
        "roi": "lung",
        "roi_mm": list(roi_mm),
        "roi_shape": list(crop_shape),
        "margin_voxels": margin,
        "split_counts": split_counts(splits),
    }
    finish_dataset(writer, req, task, ("covid",), spacing, ("ct", offset), recorded)
