"""The heart CT datasets of the paper profile: MM-WHS 2017 (SHC) and ASOCA 2020 (SAC)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gvsl.data.sources.discovery import match_pairs
from gvsl.data.sources.segmentation import segmentation_from_pairs

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["MMWHS_LABELS", "build_asoca", "build_mmwhs"]

#: MM-WHS 2017 label values of the seven heart structures, in class order
MMWHS_LABELS = {
    205: "myocardium",
    420: "left_atrium",
    500: "left_ventricle",
    550: "right_atrium",
    600: "right_ventricle",
    820: "ascending_aorta",
    850: "pulmonary_artery",
}


def build_mmwhs(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    pairs = match_pairs(
        root,
        r"(ct_(?:train|test)_\d+)_image\.nii(?:\.gz)?",
        r"(ct_(?:train|test)_\d+)_label\.nii(?:\.gz)?",
        "MM-WHS CT",
    )
    label_map = {0: 0, **{value: i + 1 for i, value in enumerate(MMWHS_LABELS)}}
    segmentation_from_pairs(
        dest, req, task, pairs, label_map, tuple(MMWHS_LABELS.values()), "heart", {"dataset": "MM-WHS 2017 CT"}
    )


def _in_annotations(path: Path) -> bool:
    return path.parent.name.lower() in ("annotations", "annotation")


def build_asoca(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    # ASOCA: <group>/CTCA/<case>.nrrd images, <group>/Annotations/<case>.nrrd coronary masks (0/1).
    pairs = match_pairs(
        root,
        r"(.+)\.nrrd",
        r"(.+)\.nrrd",
        "ASOCA",
        label_dir=_in_annotations,
        image_dir=lambda p: not _in_annotations(p),
    )
    segmentation_from_pairs(
        dest, req, task, pairs, {0: 0, 1: 1}, ("coronary_artery",), "heart", {"dataset": "ASOCA 2020"}
    )
