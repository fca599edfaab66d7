"""The generic sources: a Medical Segmentation Decathlon task folder (MSD, or its images for pre-training)
and a folder of your own unlabeled scans (pre-training)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gvsl.data.dataset import DatasetInfo, DatasetWriter
from gvsl.data.io import VOLUME_SUFFIXES, read_volume, volume_suffix
from gvsl.data.sources.discovery import case_id, unique_ids, visible
from gvsl.data.sources.conventions import PAPER_SPACING, standardise, window, window_info
from gvsl.data.sources.segmentation import segmentation_from_pairs
from gvsl.data.sources.splits import seeded_subset
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["MSD_KEYS", "build_folder", "build_msd", "pretrain_from_files"]

MSD_KEYS = ("name", "modality", "labels", "training")


def _msd_description(root: Path) -> tuple[Path, dict[str, Any]]:
    candidates = [root / "dataset.json"] if (root / "dataset.json").is_file() else visible(root.glob("*/dataset.json"))
    if len(candidates) != 1:
        raise GVSLInputError(f"{root}: expecting one Decathlon dataset.json (in the folder or one sub-folder), "
                             f"found {len(candidates)}")
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
        pretrain_from_files(dest, req, [folder / e for e in entries], modality,
                            {"dataset": f"MSD {description['name']}", "description": str(path.relative_to(root))})
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
    segmentation_from_pairs(dest, req, task, pairs, label_map, classes, "",
                            {"dataset": f"MSD {description['name']}", "modality": modality,
                             "description": str(path.relative_to(root))})


def pretrain_from_files(dest: Path, req: PrepareRequest, files: Sequence[Path], modality: str,
                        generator: dict[str, Any]) -> None:
    """Unlabeled pre-training set: every file, canonical, resampled, windowed, whole (no crop)."""
    root = req.root_folder()
    if not files:
        raise GVSLInputError(f"{root}: no images listed for pre-training")
    ids: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise GVSLInputError(f"{path}: file not found")
        unique_ids(ids, path, case_id(path))
    chosen = seeded_subset(ids, req.subjects, req.seed)
    spacing = req.target_spacing(PAPER_SPACING)
    offset = req.offset
    writer = DatasetWriter(dest, "pretrain")
    for case in req.progress_bar(chosen, f"{req.source} pretrain"):
        array, affine = standardise(read_volume(ids[case]), spacing)
        writer.add(case, "train", window(array, modality, offset, str(ids[case])), affine,
                   source_image=str(ids[case].relative_to(root)))
    writer.finish(DatasetInfo(task="pretrain", classes=(), spacing=spacing, source=req.source,
                              window=window_info(modality, offset),
                              generator={"root": str(req.root), "seed": req.seed, "subjects": req.subjects,
                                         "modality": modality, **generator}))


def build_folder(dest: Path, req: PrepareRequest, task: str) -> None:
    root = req.root_folder()
    files = [p for p in visible(root.rglob("*")) if volume_suffix(p)]
    if not files:
        raise GVSLInputError(f"{root}: no volumes found (looked for *{', *'.join(VOLUME_SUFFIXES)})")
    pretrain_from_files(dest, req, files, req.modality or "ct", {"dataset": "folder"})
