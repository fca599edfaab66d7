"""CANDI (T1 brain MR with manual FreeSurfer-style segmentations): the paper profile's SBM dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gvsl.data.dataset import DatasetWriter
from gvsl.data.io import read_volume
from gvsl.data.preprocess import roi_shape
from gvsl.data.sources.conventions import PAPER_SPACING, ROI_MM, brain_crop, cut_warning, finish_dataset, label_lut
from gvsl.data.sources.discovery import match_pairs, read_pair, source_paths
from gvsl.data.sources.splits import PAPER_SPLITS, select, split_counts
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["FREESURFER_NAMES", "build_candi"]

#: FreeSurfer aseg names of the structures CANDI's manual segmentations use
FREESURFER_NAMES = {
    2: "Left-Cerebral-White-Matter",
    3: "Left-Cerebral-Cortex",
    4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent",
    7: "Left-Cerebellum-White-Matter",
    8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus",
    11: "Left-Caudate",
    12: "Left-Putamen",
    13: "Left-Pallidum",
    14: "3rd-Ventricle",
    15: "4th-Ventricle",
    16: "Brain-Stem",
    17: "Left-Hippocampus",
    18: "Left-Amygdala",
    24: "CSF",
    26: "Left-Accumbens-area",
    28: "Left-VentralDC",
    41: "Right-Cerebral-White-Matter",
    42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent",
    46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus",
    50: "Right-Caudate",
    51: "Right-Putamen",
    52: "Right-Pallidum",
    53: "Right-Hippocampus",
    54: "Right-Amygdala",
    58: "Right-Accumbens-area",
    60: "Right-VentralDC",
}


def _label_map(chosen, req: PrepareRequest, root: Path) -> dict[int, int]:
    """The label values present in the cohort, mapped to consecutive class ids (a first pass over the labels)."""
    values: set[int] = set()
    for _, _, label_path in req.progress_bar(chosen, "candi label values"):
        values.update(int(v) for v in np.unique(read_volume(label_path, kind="label").array))
    if len(values - {0}) > 255:
        raise GVSLInputError(f"{root}: {len(values - {0})} label values, more than uint8 class ids can hold")
    return {0: 0, **{v: i + 1 for i, v in enumerate(sorted(values - {0}))}}


def build_candi(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    pairs = match_pairs(root, r"(.+)_procimg\.nii(?:\.gz)?", r"(.+)_seg\.nii(?:\.gz)?", "CANDI")
    splits = select([cid for cid, _, _ in pairs], req.subjects, req.seed, PAPER_SPLITS[task], f"candi {root}")
    chosen = [p for p in pairs if p[0] in splits]
    label_map = _label_map(chosen, req, root)
    classes = tuple(FREESURFER_NAMES.get(v, f"label_{v}") for v in sorted(label_map) if v)
    spacing = req.target_spacing(PAPER_SPACING)
    roi_mm = req.roi_mm or ROI_MM["brain"]
    crop_shape = roi_shape(roi_mm, spacing)
    lut = label_lut(label_map)
    writer = DatasetWriter(dest, task)
    cut: list[str] = []
    for case_id, image_path, label_path in req.progress_bar(chosen, "candi SBM"):
        image, label = read_pair(image_path, label_path, label_map)
        label.array = lut(label.array)
        image_array, label_array, out_affine = brain_crop(image, label, spacing, crop_shape, case_id, cut)
        sources = source_paths(root, image_path, label_path)
        writer.add(case_id, splits[case_id], image_array, out_affine, label=label_array, **sources)
    cut_warning(cut, f"candi {root}")
    recorded = {
        "dataset": "CANDI",
        "root": str(req.root),
        "seed": req.seed,
        "subjects": req.subjects,
        "roi": "brain centre",
        "roi_mm": list(roi_mm),
        "roi_shape": list(crop_shape),
        "split_counts": split_counts(splits),
    }
    label_values = {str(k): v for k, v in label_map.items() if v}
    finish_dataset(writer, req, task, classes, spacing, ("mr", 0.0), recorded, label_values)
