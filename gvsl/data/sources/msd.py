"""The generic sources: a Medical Segmentation Decathlon task folder (MSD, or its images for pre-training)
and a folder of your own unlabeled scans (pre-training): volume files and DICOM series
(:mod:`gvsl.data.dicom`)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gvsl.data.dataset import DatasetWriter
from gvsl.data.io import VOLUME_SUFFIXES, read_volume, volume_suffix
from gvsl.data.sources.conventions import PAPER_SPACING, finish_dataset, standardise, window
from gvsl.data.sources.discovery import case_id, unique_ids, visible
from gvsl.data.sources.segmentation import segmentation_from_pairs
from gvsl.data.sources.splits import seeded_subset
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.dicom import DicomSeries
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["MSD_KEYS", "build_folder", "build_msd", "pretrain_from_files"]

MSD_KEYS = ("name", "modality", "labels", "training")


def _msd_description(root: Path) -> tuple[Path, dict[str, Any]]:
    candidates = [root / "dataset.json"] if (root / "dataset.json").is_file() else visible(root.glob("*/dataset.json"))
    if len(candidates) != 1:
        raise GVSLInputError(
            f"{root}: expecting one Decathlon dataset.json (in the folder or one sub-folder), found {len(candidates)}"
        )
    path = candidates[0]
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GVSLInputError(f"{path}: not valid JSON ({err})") from err
    missing = [k for k in MSD_KEYS if k not in description]
    if missing:
        raise GVSLInputError(f"{path}: missing keys {missing}")
    return path, description


def _msd_modality(req: PrepareRequest, description: dict[str, Any], path: Path) -> str:
    if req.modality:
        return req.modality
    modalities = description["modality"]
    if len(modalities) != 1:
        raise GVSLInputError(f"{path}: {len(modalities)} image channels {modalities}; the kit reads one-channel tasks")
    return "ct" if str(next(iter(modalities.values()))).strip().upper() == "CT" else "mr"


def build_msd(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    path, description = _msd_description(root)
    folder = path.parent
    modality = _msd_modality(req, description, path)
    if task == "pretrain":
        entries = [e["image"] for e in description["training"]] + list(description.get("test", []))
        pretrain_from_files(
            dest,
            req,
            [folder / e for e in entries],
            modality,
            {"dataset": f"MSD {description['name']}", "description": str(path.relative_to(root))},
        )
        return
    pairs = [(case_id(folder / e["image"]), folder / e["image"], folder / e["label"]) for e in description["training"]]
    for _, image_path, label_path in pairs:
        for p in (image_path, label_path):
            if not p.is_file():
                raise GVSLInputError(f"{path}: lists {p.relative_to(folder)}, which is not there")
    labels = {int(k): str(v) for k, v in description["labels"].items()}
    label_map = {v: v for v in labels}
    if sorted(labels) != list(range(len(labels))):
        raise GVSLInputError(f"{path}: labels {sorted(labels)} are not 0..{len(labels) - 1}")
    classes = tuple(labels[k] for k in sorted(labels) if k)
    segmentation_from_pairs(
        dest,
        req,
        task,
        pairs,
        label_map,
        classes,
        "",
        {"dataset": f"MSD {description['name']}", "modality": modality, "description": str(path.relative_to(root))},
    )


def pretrain_from_files(
    dest: Path, req: PrepareRequest, files: Sequence[Path | DicomSeries], modality: str, generator: dict[str, Any]
) -> None:
    """Unlabeled pre-training set: every file or DICOM series, canonical, resampled, windowed, whole (no crop).

    A file's case id is its name without the suffix; a series' is its :attr:`DicomSeries.name`.
    """
    root = req.root_folder()
    if not files:
        raise GVSLInputError(f"{root}: no images listed for pre-training")
    where: dict[str, Path] = {}
    scans: dict[str, Path | DicomSeries] = {}
    for scan in files:
        if isinstance(scan, Path):
            if not scan.is_file():
                raise GVSLInputError(f"{scan}: file not found")
            case, path = case_id(scan), scan
        else:
            case, path = scan.name, scan.folder
        unique_ids(where, path, case)
        scans[case] = scan
    chosen = seeded_subset(list(scans), req.subjects, req.seed)
    spacing = req.target_spacing(PAPER_SPACING)
    offset = req.offset
    writer = DatasetWriter(dest, "pretrain")
    for case in req.progress_bar(chosen, f"{req.source} pretrain"):
        scan = scans[case]
        volume = read_volume(scan) if isinstance(scan, Path) else scan.read()
        array, affine = standardise(volume, spacing)
        # a series is recorded by its folder and SeriesInstanceUID (a folder may hold several)
        series = {} if isinstance(scan, Path) else {"source_series": scan.uid}
        writer.add(
            case,
            "train",
            window(array, modality, offset, str(where[case])),
            affine,
            source_image=str(where[case].relative_to(root)),
            **series,
        )
    recorded = {
        "root": str(req.root),
        "seed": req.seed,
        "subjects": req.subjects,
        "modality": modality,
        **generator,
    }
    finish_dataset(writer, req, "pretrain", (), spacing, (modality, offset), recorded)


def _skipped_warning(root: Path, modality: str, skipped: Sequence[tuple[str, str]]) -> None:
    """One warning naming what the folder source left out, grouped by reason (first few of each)."""
    reasons: dict[str, list[str]] = {}
    for name, reason in skipped:
        reasons.setdefault(reason, []).append(name)
    parts = [
        f"{reason}: {len(names)} ({'; '.join(names[:3])}{'; …' if len(names) > 3 else ''})"
        for reason, names in reasons.items()
    ]
    warnings.warn(f"{root}: skipping what is not a {modality.upper()} volume: {'; '.join(parts)}", stacklevel=3)


def build_folder(dest: Path, req: PrepareRequest, task: str) -> None:
    """Every volume file and every DICOM series of the modality under ``--root`` (see :mod:`gvsl.data.dicom`)."""
    from gvsl.data.dicom import find_dicom_series  # imports pydicom when a folder is read, not at start-up

    root = req.root_folder()
    modality = req.modality or "ct"
    found = visible(root.rglob("*"))
    files = [p for p in found if volume_suffix(p)]
    series, skipped = find_dicom_series([p for p in found if not volume_suffix(p)], root, modality)
    if not files and not series:
        raise GVSLInputError(
            f"{root}: no volumes found (looked for *{', *'.join(VOLUME_SUFFIXES)} and DICOM {modality.upper()} series)"
        )
    if skipped:
        _skipped_warning(root, modality, skipped)
    pretrain_from_files(dest, req, [*files, *series], modality, {"dataset": "folder"})
