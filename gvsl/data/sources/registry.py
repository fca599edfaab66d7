"""The data sources ``gvsl prepare --source`` knows: each one's builder, tasks and whether it reads ``--root``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gvsl.data.sources.candi import build_candi
from gvsl.data.sources.generated import build_mni_brain, build_phantom_ct
from gvsl.data.sources.heart import build_asoca, build_mmwhs
from gvsl.data.sources.msd import build_folder, build_msd
from gvsl.data.sources.request import PrepareRequest
from gvsl.data.sources.stoic import build_stoic
from gvsl.errors import GVSLInputError

__all__ = ["SOURCES", "SourceSpec", "source_spec"]


@dataclass(frozen=True)
class SourceSpec:
    """A data source: its builder, the tasks it can prepare, and whether it reads ``--root``."""

    build: Callable[[Path, PrepareRequest, str], None]
    tasks: tuple[str, ...]
    generated: bool
    help: str


SOURCES: dict[str, SourceSpec] = {
    "phantom-ct": SourceSpec(
        build_phantom_ct, ("pretrain", "SHC", "SAC", "CCC"), True, "generated thorax CT cohorts (default profile)"
    ),
    "mni-brain": SourceSpec(build_mni_brain, ("SBM",), True, "generated brain MR cohort (SBM analog)"),
    "mmwhs": SourceSpec(build_mmwhs, ("SHC",), False, "MM-WHS 2017 CT (ct_*_image/label.nii.gz)"),
    "asoca": SourceSpec(build_asoca, ("SAC",), False, "ASOCA 2020 (CTCA/*.nrrd + Annotations/*.nrrd)"),
    "stoic": SourceSpec(build_stoic, ("CCC",), False, "STOIC 2021 (*.mha + reference.csv)"),
    "candi": SourceSpec(build_candi, ("SBM",), False, "CANDI T1 (*_procimg.nii.gz + *_seg.nii.gz)"),
    "msd": SourceSpec(build_msd, ("MSD", "pretrain"), False, "Medical Segmentation Decathlon task folder"),
    "folder": SourceSpec(
        build_folder, ("pretrain",), False, "your own unlabeled scans (volume files and DICOM series)"
    ),
}


def source_spec(request: PrepareRequest) -> SourceSpec:
    """The source ``request`` names, checked against what that source prepares and reads.

    Raises:
        GVSLInputError: an unknown source, a task it does not prepare, ``--root`` given to a generated source
            or missing for a real one, ``--shape`` for a real one.
    """
    if request.source not in SOURCES:
        raise GVSLInputError(f"source {request.source!r} is not one of {', '.join(SOURCES)}")
    spec = SOURCES[request.source]
    if request.task is not None and request.task not in spec.tasks:
        raise GVSLInputError(f"source {request.source} prepares task {' or '.join(spec.tasks)}, not {request.task!r}")
    if spec.generated and request.root is not None:
        raise GVSLInputError(f"source {request.source} is generated and reads no --root")
    if not spec.generated:
        if request.root is None:
            raise GVSLInputError(f"source {request.source} needs --root, the folder holding the dataset")
        if request.shape is not None:
            raise GVSLInputError(f"--shape applies to generated sources only, not to {request.source}")
    return spec
