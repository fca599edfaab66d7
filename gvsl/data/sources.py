"""One builder per data source: find the cases, check them, preprocess them, write a prepared dataset.

Every builder writes one task's dataset (:class:`gvsl.data.dataset.DatasetWriter`) into a folder
that :func:`gvsl.data.prepare.prepare` later renames into place. The same preprocessing path serves
the generated cohorts (default profile) and the real datasets (paper profile): canonical RAS+
orientation, resampling to the target spacing (a no-op for generated volumes, which are made on
that grid), the task's ROI crop, then the intensity window.

Splits of real datasets follow the paper's counts (:data:`PAPER_SPLITS`), drawn with a seeded
permutation of the sorted case ids and stored in ``manifest.csv``. A folder with a different number
of cases gets the same proportions, with a warning. Generated cohorts take one disjoint seed per
subject, derived from the base seed (:func:`subject_seed`).
"""

from __future__ import annotations

import importlib
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gvsl.data.dataset import SPLITS, DatasetInfo, DatasetWriter
from gvsl.data.io import VOLUME_SUFFIXES, Volume, check_label_values, check_same_grid, read_volume, volume_suffix
from gvsl.data.preprocess import (
    DEFAULT_HU_OFFSET,
    centred_roi,
    crop_or_pad,
    ct_window,
    foreground_box,
    lung_mask,
    minmax,
    resample,
    roi_shape,
    to_canonical,
)
from gvsl.errors import GVSLInputError

__all__ = [
    "MMWHS_LABELS",
    "PAPER_SPLITS",
    "PHANTOM_COUNTS",
    "SOURCES",
    "PrepareRequest",
    "SourceSpec",
    "assign_splits",
    "scale_counts",
    "subject_seed",
]

#: (train, val, test) cases in the paper (Sec. 4.1); MSD has no paper split: 60/20/20 %
PAPER_SPLITS = {"SHC": (15, 5, 40), "SAC": (15, 5, 20), "CCC": (1000, 400, 600), "SBM": (40, 20, 43),
                "MSD": (3, 1, 1)}
#: default (train, val, test) subjects of the generated CPU cohorts
PHANTOM_COUNTS = {"pretrain": (24, 0, 0), "SHC": (8, 4, 8), "SAC": (8, 4, 8), "CCC": (24, 12, 24), "SBM": (8, 4, 8)}
#: MM-WHS 2017 label values of the seven heart structures, in class order
MMWHS_LABELS = {205: "myocardium", 420: "left_atrium", 500: "left_ventricle", 550: "right_atrium",
                600: "right_ventricle", 820: "ascending_aorta", 850: "pulmonary_artery"}

# Region-of-interest sizes in mm (converted to voxels at the target spacing) and box margins in mm.
# Real data: a 176 mm cube holds a whole heart with its great vessels plus an 8 mm margin; the lung box
# covers both lungs of an adult. Generated cohorts: 160 mm heart (32 voxels at 5 mm), 320×240×280 mm chest.
# CANDI: the paper's 160×160×128 crop at 1 mm. The MNI152 brain (an adult average, 146×180×148 mm
# labelled) does not fit that crop, so mni-brain keeps a 160×192×160 mm box.
ROI_MM = {"heart": (176.0, 176.0, 176.0), "lung": (320.0, 256.0, 320.0), "brain": (160.0, 160.0, 128.0),
          "phantom-heart": (160.0, 160.0, 160.0), "phantom-lung": (320.0, 240.0, 280.0),
          "phantom-brain": (160.0, 192.0, 160.0)}
MARGIN_MM = 8.0
PAPER_SPACING = (1.0, 1.0, 1.0)
# cohort codes for subject seeds: seeds of different cohorts never collide
_COHORT_CODES = {"pretrain": 1, "SHC": 2, "SAC": 3, "CCC": 4, "SBM": 5}
_MAX_SUBJECTS = 10_000


@dataclass
class PrepareRequest:
    """What the user asked ``gvsl prepare`` for (CLI flags or :func:`gvsl.data.prepare.prepare` arguments).

    Attributes:
        source: a key of :data:`SOURCES`.
        root: input folder of a real dataset (None for generated sources).
        subjects: generated sources: cases per task (split in the default proportions); real
            sources: use a seeded subset of this many cases. None: the defaults / every case.
        shape: generated volume shape (D, H, W), generated sources only.
        spacing: target voxel size in mm (real data: 1 mm³; generated: the generator's grid).
        seed: base seed of subjects and splits.
        window_offset: CT window offset added to HU (default 1024, see :mod:`gvsl.data.preprocess`).
        roi_mm: override of the task's ROI size (mm).
        modality: ``ct`` or ``mr`` for the generic sources (folder, msd).
        progress: show a tqdm progress bar.
    """

    source: str
    root: Path | None = None
    subjects: int | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    seed: int = 0
    window_offset: float | None = None
    roi_mm: tuple[float, float, float] | None = None
    modality: str | None = None
    progress: bool = False


@dataclass(frozen=True)
class SourceSpec:
    """A data source: its builder, the tasks it can prepare, and whether it reads ``--root``."""

    build: Callable[[Path, PrepareRequest, str], None]
    tasks: tuple[str, ...]
    generated: bool
    help: str


# ---------------------------------------------------------------------------------------------- helpers


def subject_seed(base_seed: int, cohort: str, index: int) -> int:
    """Seed of subject ``index`` of ``cohort``: ``base·10⁵ + code·10⁴ + index``, disjoint across cohorts."""
    if base_seed < 0:
        raise GVSLInputError(f"seed must be >= 0, got {base_seed}")
    if not 0 <= index < _MAX_SUBJECTS:
        raise GVSLInputError(f"subjects: at most {_MAX_SUBJECTS} per cohort, got index {index}")
    return base_seed * 10 * _MAX_SUBJECTS + _COHORT_CODES[cohort] * _MAX_SUBJECTS + index


def scale_counts(counts: Sequence[int], total: int, *, what: str) -> tuple[int, ...]:
    """Split ``total`` cases in the proportions of ``counts`` (largest remainder, every used split ≥ 1).

    Returns ``counts`` itself when they add up to ``total``; otherwise warns that the split was scaled.
    """
    counts = tuple(int(c) for c in counts)
    used = [i for i, c in enumerate(counts) if c > 0]
    if total < len(used):
        raise GVSLInputError(f"{what}: {total} cases cannot fill the {len(used)} splits {SPLITS[:len(counts)]}")
    if sum(counts) == total:
        return counts
    exact = np.array(counts, dtype=float) * total / sum(counts)
    scaled = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - scaled), kind="stable")[: total - scaled.sum()]:
        scaled[i] += 1
    for i in used:  # borrow from the largest split so no split is empty
        if scaled[i] == 0:
            scaled[int(np.argmax(scaled))] -= 1
            scaled[i] = 1
    warnings.warn(f"{what}: {total} cases instead of the {sum(counts)} of the reference split {counts}; "
                  f"using the same proportions: {tuple(int(s) for s in scaled)}", stacklevel=3)
    return tuple(int(s) for s in scaled)


def assign_splits(ids: Sequence[str], counts: Sequence[int], seed: int) -> dict[str, str]:
    """Case id -> split, from a seeded permutation of the sorted ids (stable for a given folder and seed)."""
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    names = [name for name, n in zip(SPLITS, counts) for _ in range(n)]
    assert len(names) == len(ordered)
    return {ordered[j]: names[k] for k, j in enumerate(order)}


def _label_lut(mapping: dict[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised original-value -> class-id mapping for values already checked to be in ``mapping``."""
    keys = np.array(sorted(mapping), dtype=np.int64)
    ids = np.array([mapping[k] for k in keys], dtype=np.uint8)

    def apply(values: np.ndarray) -> np.ndarray:
        return ids[np.searchsorted(keys, values.astype(np.int64))]

    return apply


def _standardise(volume: Volume, spacing: Sequence[float], *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Canonical RAS+ orientation, then resampling to ``spacing`` (trilinear, or nearest for labels)."""
    array, affine = to_canonical(volume.array, volume.affine)
    return resample(array, affine, spacing, label=label)


def _window(array: np.ndarray, modality: str, offset: float, name: str) -> np.ndarray:
    return ct_window(array, offset) if modality == "ct" else minmax(array, name=name)


def _window_info(modality: str, offset: float) -> dict[str, Any]:
    if modality == "ct":
        return {"kind": "ct", "offset": offset, "width": 2048.0, "formula": "clip(raw + offset, 0, 2048) / 2048"}
    return {"kind": "minmax", "formula": "(raw - min) / (max - min)"}


def _progress(items: Iterable, req: PrepareRequest, desc: str):
    # disable=None: a bar only on a terminal, so logs and captured stderr stay clean
    return tqdm(items, desc=desc, unit="case", disable=None if req.progress else True, leave=False)


def _spacing(req: PrepareRequest, default: Sequence[float]) -> tuple[float, float, float]:
    return tuple(float(s) for s in (req.spacing or default))


def _offset(req: PrepareRequest) -> float:
    return DEFAULT_HU_OFFSET if req.window_offset is None else float(req.window_offset)


def _cut_warning(cut: list[str], what: str) -> None:
    if cut:
        shown = ", ".join(cut[:5]) + (", …" if len(cut) > 5 else "")
        warnings.warn(f"{what}: the fixed crop cut labelled voxels of {len(cut)} case(s): {shown}", stacklevel=3)


# ----------------------------------------------------------------------------------------- generated


def _phantom_module(name: str):
    # Imported on use: the generators are only needed by the generated sources.
    return importlib.import_module(f"gvsl.data.{name}")


def _phantom_split_counts(req: PrepareRequest, task: str) -> tuple[int, ...]:
    defaults = PHANTOM_COUNTS[task]
    if req.subjects is None:
        return defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asking for another cohort size is deliberate here
        return scale_counts(defaults, req.subjects, what=f"{req.source} {task}")


def _build_phantom_ct(dest: Path, req: PrepareRequest, task: str) -> None:
    phantom = _phantom_module("phantom")
    spacing = _spacing(req, (5.0, 5.0, 5.0))
    shape = tuple(req.shape or (64, 64, 64))
    offset = _offset(req)
    roi_mm = req.roi_mm or ROI_MM["phantom-lung" if task == "CCC" else "phantom-heart"]
    crop_shape = roi_shape(roi_mm, spacing)
    margin = int(round(MARGIN_MM / min(spacing)))
    counts = _phantom_split_counts(req, task)
    writer = DatasetWriter(dest, task)
    affine = np.diag([*spacing, 1.0])
    plan = [(split, i) for split, n in zip(SPLITS, counts) for i in range(n)]
    for index, (split, within) in enumerate(_progress(plan, req, f"phantom-ct {task}")):
        seed = subject_seed(req.seed, task, index)
        case_id = f"{task.lower()}_{index:04d}"
        # CCC: alternate the class inside each split so every split is balanced.
        opacity = bool(within % 2) if task == "CCC" else None
        subject = phantom.generate_subject(seed, shape=shape, spacing=spacing, opacity=opacity)
        volume = Volume(np.asarray(subject.image_hu, dtype=np.float32), affine, Path(case_id))
        hu, hu_affine = _standardise(volume, spacing)
        if task == "pretrain":
            writer.add(case_id, split, ct_window(hu, offset), hu_affine, seed=seed)
            continue
        if task == "CCC":
            # The generator knows its lungs; thresholding (the STOIC path) loses the thin chest wall to
            # partial volume on coarse grids (>= ~15 mm voxels) and would then find no enclosed air.
            roi = centred_roi(subject.lung_box, crop_shape, margin=margin, name=case_id, strict=False)
            image, image_affine = crop_or_pad(ct_window(hu, offset), hu_affine, roi)
            writer.add(case_id, split, image, image_affine, target=int(subject.opacity), seed=seed)
            continue
        mask = subject.heart if task == "SHC" else subject.coronary
        label, _ = _standardise(Volume(np.asarray(mask, dtype=np.uint8), affine, Path(case_id)), spacing, label=True)
        box = foreground_box(label)
        if box is None:
            raise GVSLInputError(f"{case_id} (seed {seed}): empty {task} label")
        roi = centred_roi(box, crop_shape, margin=margin, name=case_id)
        image, image_affine = crop_or_pad(ct_window(hu, offset), hu_affine, roi)
        label, _ = crop_or_pad(label, hu_affine, roi)
        writer.add(case_id, split, image, image_affine, label=label, seed=seed)
    classes = {"pretrain": (), "SHC": phantom.HEART_CLASSES, "SAC": ("coronary_artery",),
               "CCC": ("opacity",)}[task]
    generator = {"generator": "gvsl.data.phantom", "seed": req.seed, "shape": list(shape),
                 "split_counts": list(counts), "subject_seed": "seed*100000 + cohort*10000 + index"}
    if task != "pretrain":
        generator.update(roi="lung" if task == "CCC" else "label box", roi_mm=list(roi_mm),
                         roi_shape=list(crop_shape), margin_voxels=margin)
    writer.finish(DatasetInfo(task=task, classes=classes, spacing=spacing, source=req.source,
                              window=_window_info("ct", offset), generator=generator))


def _build_mni_brain(dest: Path, req: PrepareRequest, task: str) -> None:
    brain = _phantom_module("brain")
    spacing = _spacing(req, (4.0, 4.0, 4.0))
    shape = tuple(req.shape or (48, 48, 40))
    roi_mm = req.roi_mm or ROI_MM["phantom-brain"]
    crop_shape = roi_shape(roi_mm, spacing)
    counts = _phantom_split_counts(req, task)
    writer = DatasetWriter(dest, task)
    classes = tuple(brain.BRAIN_CLASSES)
    plan = [split for split, n in zip(SPLITS, counts) for _ in range(n)]
    cut: list[str] = []
    for index, split in enumerate(_progress(plan, req, "mni-brain SBM")):
        seed = subject_seed(req.seed, task, index)
        case_id = f"sbm_{index:04d}"
        subject = brain.generate_subject(seed, shape=shape, spacing=spacing)
        image = Volume(np.asarray(subject.image, dtype=np.float32), np.asarray(subject.affine, float), Path(case_id))
        label = Volume(np.asarray(subject.label), image.affine, Path(case_id))
        check_label_values(label, range(len(classes) + 1))
        image_array, label_array, out_affine = _brain_crop(image, label, spacing, crop_shape, case_id, cut)
        writer.add(case_id, split, image_array, out_affine, label=label_array.astype(np.uint8), seed=seed)
    _cut_warning(cut, "mni-brain")
    writer.finish(DatasetInfo(task=task, classes=classes, spacing=spacing, source=req.source,
                              window=_window_info("mr", 0.0),
                              generator={"generator": "gvsl.data.brain", "seed": req.seed, "shape": list(shape),
                                         "split_counts": list(counts), "roi": "brain centre",
                                         "roi_mm": list(roi_mm), "roi_shape": list(crop_shape),
                                         "subject_seed": "seed*100000 + cohort*10000 + index"}))


def _brain_crop(image: Volume, label: Volume, spacing: Sequence[float], crop_shape: Sequence[int], case_id: str,
                cut: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CANDI-style crop: fixed size, centred on the labelled brain's bounding box, then min-max.

    Returns the image in [0, 1], the label and their affine; ``case_id`` is appended to ``cut`` when
    the crop loses labelled voxels.
    """
    image_array, affine = _standardise(image, spacing)
    label_array, _ = _standardise(label, spacing, label=True)
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


# -------------------------------------------------------------------------------------------- real data


def _require_root(req: PrepareRequest) -> Path:
    assert req.root is not None
    root = Path(req.root)
    if not root.is_dir():
        raise GVSLInputError(f"{root}: input folder not found")
    return root


def _visible(paths: Iterable[Path]) -> list[Path]:
    """Drop hidden files and macOS resource forks (``._name``) that archives often carry."""
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def _unique_ids(pairs: dict[str, Path], path: Path, case_id: str) -> None:
    if case_id in pairs:
        raise GVSLInputError(f"{path}: case {case_id} also found at {pairs[case_id]}")
    pairs[case_id] = path


def _match_pairs(root: Path, image_re: str, label_re: str, what: str,
                 label_dir: Callable[[Path], bool] = lambda p: True,
                 image_dir: Callable[[Path], bool] = lambda p: True) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) for every image under ``root`` whose name matches ``image_re``.

    ``image_re``/``label_re`` capture the case id in group 1. Images without a label are skipped
    with a warning; none at all is an error naming the folder and the patterns.
    """
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in _visible(root.rglob("*")):
        if (m := re.fullmatch(label_re, path.name)) and label_dir(path):
            _unique_ids(labels, path, m.group(1))
        elif (m := re.fullmatch(image_re, path.name)) and image_dir(path):
            _unique_ids(images, path, m.group(1))
    if not images:
        raise GVSLInputError(f"{root}: no {what} images found (looked for files named /{image_re}/)")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        warnings.warn(f"{root}: skipping {len(unlabelled)} {what} image(s) without a label "
                      f"(/{label_re}/): {', '.join(unlabelled[:5])}{', …' if len(unlabelled) > 5 else ''}",
                      stacklevel=3)
    pairs = [(cid, images[cid], labels[cid]) for cid in sorted(images) if cid in labels]
    if not pairs:
        raise GVSLInputError(f"{root}: no {what} image has a label (looked for files named /{label_re}/)")
    return pairs


def _select(ids: Sequence[str], req: PrepareRequest, reference: Sequence[int], what: str) -> dict[str, str]:
    """Case id -> split for the real sources: optional seeded subset, then the (scaled) paper split."""
    ids = sorted(ids)
    if req.subjects is not None and req.subjects < len(ids):
        keep = np.random.default_rng(req.seed).permutation(len(ids))[: req.subjects]
        ids = sorted(ids[i] for i in keep)
    counts = scale_counts(reference, len(ids), what=what)
    return assign_splits(ids, counts, req.seed)


def _read_pair(image_path: Path, label_path: Path, allowed: Iterable[int]) -> tuple[Volume, Volume]:
    image = read_volume(image_path)
    label = read_volume(label_path, kind="label")
    check_same_grid(image, label)
    check_label_values(label, allowed)
    return image, label


def _segmentation_from_pairs(dest: Path, req: PrepareRequest, task: str, pairs, label_map: dict[int, int],
                             classes: Sequence[str], roi_kind: str, generator: dict[str, Any]) -> None:
    """Shared path of MM-WHS, ASOCA and MSD: read, check, map labels, 1 mm³, crop, window, write."""
    root = _require_root(req)
    spacing = _spacing(req, PAPER_SPACING)
    offset = _offset(req)
    modality = generator.get("modality", "ct")
    splits = _select([cid for cid, _, _ in pairs], req, PAPER_SPLITS[task], f"{req.source} {root}")
    lut = _label_lut(label_map)
    crop_shape = roi_shape(req.roi_mm or ROI_MM[roi_kind], spacing) if roi_kind else None
    margin = int(round(MARGIN_MM / min(spacing)))
    writer = DatasetWriter(dest, task)
    chosen = [p for p in pairs if p[0] in splits]
    for case_id, image_path, label_path in _progress(chosen, req, f"{req.source} {task}"):
        image, label = _read_pair(image_path, label_path, label_map)
        label.array = lut(label.array)
        image_array, affine = _standardise(image, spacing)
        label_array, _ = _standardise(label, spacing, label=True)
        if crop_shape is not None:
            box = foreground_box(label_array)
            if box is None:
                raise GVSLInputError(f"{label_path}: label volume is empty, no region of interest")
            roi = centred_roi(box, crop_shape, margin=margin, name=str(label_path))
            image_array, out_affine = crop_or_pad(_window(image_array, modality, offset, str(image_path)), affine, roi)
            label_array, _ = crop_or_pad(label_array, affine, roi)
        else:
            image_array, out_affine = _window(image_array, modality, offset, str(image_path)), affine
        writer.add(case_id, splits[case_id], image_array, out_affine, label=label_array,
                   source_image=str(image_path.relative_to(root)), source_label=str(label_path.relative_to(root)))
    if crop_shape is not None:
        generator = {**generator, "roi": f"{roi_kind} label box", "roi_mm": list(req.roi_mm or ROI_MM[roi_kind]),
                     "roi_shape": list(crop_shape), "margin_voxels": margin}
    writer.finish(DatasetInfo(task=task, classes=tuple(classes), spacing=spacing, source=req.source,
                              window=_window_info(modality, offset),
                              label_values={str(k): int(v) for k, v in label_map.items() if v},
                              generator={"root": str(req.root), "seed": req.seed, "subjects": req.subjects,
                                         "split_counts": [sum(s == n for s in splits.values()) for n in SPLITS],
                                         **generator}))


def _build_mmwhs(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    pairs = _match_pairs(root, r"(ct_(?:train|test)_\d+)_image\.nii(?:\.gz)?",
                         r"(ct_(?:train|test)_\d+)_label\.nii(?:\.gz)?", "MM-WHS CT")
    label_map = {0: 0, **{value: i + 1 for i, value in enumerate(MMWHS_LABELS)}}
    _segmentation_from_pairs(dest, req, task, pairs, label_map, tuple(MMWHS_LABELS.values()), "heart",
                             {"dataset": "MM-WHS 2017 CT"})


def _in_annotations(path: Path) -> bool:
    return path.parent.name.lower() in ("annotations", "annotation")


def _build_asoca(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    # ASOCA: <group>/CTCA/<case>.nrrd images, <group>/Annotations/<case>.nrrd coronary masks (0/1).
    pairs = _match_pairs(root, r"(.+)\.nrrd", r"(.+)\.nrrd", "ASOCA", label_dir=_in_annotations,
                         image_dir=lambda p: not _in_annotations(p))
    _segmentation_from_pairs(dest, req, task, pairs, {0: 0, 1: 1}, ("coronary_artery",), "heart",
                             {"dataset": "ASOCA 2020"})


# FreeSurfer aseg names of the structures CANDI's manual segmentations use.
_FREESURFER_NAMES = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex", 10: "Left-Thalamus",
    11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle", 15: "4th-Ventricle",
    16: "Brain-Stem", 17: "Left-Hippocampus", 18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area",
    28: "Left-VentralDC", 41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle", 44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen",
    52: "Right-Pallidum", 53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area",
    60: "Right-VentralDC",
}


def _build_candi(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    pairs = _match_pairs(root, r"(.+)_procimg\.nii(?:\.gz)?", r"(.+)_seg\.nii(?:\.gz)?", "CANDI")
    splits = _select([cid for cid, _, _ in pairs], req, PAPER_SPLITS[task], f"candi {root}")
    chosen = [p for p in pairs if p[0] in splits]
    # First pass: the label values present in the cohort, mapped to consecutive ids.
    values: set[int] = set()
    for _, _, label_path in _progress(chosen, req, "candi label values"):
        values.update(int(v) for v in np.unique(read_volume(label_path, kind="label").array))
    if len(values - {0}) > 255:
        raise GVSLInputError(f"{root}: {len(values - {0})} label values, more than uint8 class ids can hold")
    label_map = {0: 0, **{v: i + 1 for i, v in enumerate(sorted(values - {0}))}}
    classes = tuple(_FREESURFER_NAMES.get(v, f"label_{v}") for v in sorted(values - {0}))
    spacing = _spacing(req, PAPER_SPACING)
    roi_mm = req.roi_mm or ROI_MM["brain"]
    crop_shape = roi_shape(roi_mm, spacing)
    lut = _label_lut(label_map)
    writer = DatasetWriter(dest, task)
    cut: list[str] = []
    for case_id, image_path, label_path in _progress(chosen, req, "candi SBM"):
        image, label = _read_pair(image_path, label_path, label_map)
        label.array = lut(label.array)
        image_array, label_array, out_affine = _brain_crop(image, label, spacing, crop_shape, case_id, cut)
        writer.add(case_id, splits[case_id], image_array, out_affine, label=label_array,
                   source_image=str(image_path.relative_to(root)), source_label=str(label_path.relative_to(root)))
    _cut_warning(cut, f"candi {root}")
    writer.finish(DatasetInfo(task=task, classes=classes, spacing=spacing, source=req.source,
                              window=_window_info("mr", 0.0),
                              label_values={str(k): v for k, v in label_map.items() if v},
                              generator={"dataset": "CANDI", "root": str(req.root), "seed": req.seed,
                                         "subjects": req.subjects, "roi": "brain centre",
                                         "roi_mm": list(roi_mm), "roi_shape": list(crop_shape),
                                         "split_counts": [sum(s == n for s in splits.values()) for n in SPLITS]}))


STOIC_COLUMNS = ("PatientID", "probCOVID", "probSevere")


def _stoic_reference(root: Path) -> tuple[Path, dict[str, int]]:
    found = _visible(root.rglob("reference.csv"))
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


def _build_stoic(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    images: dict[str, Path] = {}
    for path in _visible(root.rglob("*")):
        if volume_suffix(path) in (".mha", ".mhd"):
            _unique_ids(images, path, path.name[: -len(volume_suffix(path))])
    if not images:
        raise GVSLInputError(f"{root}: no STOIC images found (looked for *.mha, *.mhd)")
    reference, targets = _stoic_reference(root)
    # Check every case before any volume is read: a missing row should not surface after hours.
    for case_id, path in sorted(images.items()):
        if case_id not in targets:
            raise GVSLInputError(f"{path}: no row for PatientID {case_id} in {reference}")
    splits = _select(list(images), req, PAPER_SPLITS[task], f"stoic {root}")
    spacing = _spacing(req, PAPER_SPACING)
    offset = _offset(req)
    roi_mm = req.roi_mm or ROI_MM["lung"]
    crop_shape = roi_shape(roi_mm, spacing)
    margin = int(round(MARGIN_MM / min(spacing)))
    writer = DatasetWriter(dest, task)
    for case_id in _progress(sorted(splits), req, "stoic CCC"):
        volume = read_volume(images[case_id])
        hu, affine = _standardise(volume, spacing)
        box = foreground_box(lung_mask(hu))
        if box is None:
            raise GVSLInputError(f"{images[case_id]}: no lungs found by thresholding (is it a chest CT in HU?)")
        roi = centred_roi(box, crop_shape, margin=margin, name=str(images[case_id]), strict=False)
        image, out_affine = crop_or_pad(ct_window(hu, offset), affine, roi)
        writer.add(case_id, splits[case_id], image, out_affine, target=targets[case_id],
                   source_image=str(images[case_id].relative_to(root)))
    writer.finish(DatasetInfo(task=task, classes=("covid",), spacing=spacing, source=req.source,
                              window=_window_info("ct", offset),
                              generator={"dataset": "STOIC 2021", "root": str(req.root), "seed": req.seed,
                                         "subjects": req.subjects, "reference": str(reference.relative_to(root)),
                                         "target": "probCOVID", "roi": "lung", "roi_mm": list(roi_mm),
                                         "roi_shape": list(crop_shape), "margin_voxels": margin,
                                         "split_counts": [sum(s == n for s in splits.values()) for n in SPLITS]}))


MSD_KEYS = ("name", "modality", "labels", "training")


def _msd_description(root: Path) -> tuple[Path, dict[str, Any]]:
    candidates = [root / "dataset.json"] if (root / "dataset.json").is_file() else _visible(root.glob("*/dataset.json"))
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


def _build_msd(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    path, description = _msd_description(root)
    folder = path.parent
    modality = _msd_modality(req, description, path)
    if task == "pretrain":
        entries = [e["image"] for e in description["training"]] + list(description.get("test", []))
        _pretrain_from_files(dest, req, [folder / e for e in entries], modality,
                             {"dataset": f"MSD {description['name']}", "description": str(path.relative_to(root))})
        return
    pairs = [(_case_id(folder / e["image"]), folder / e["image"], folder / e["label"]) for e in description["training"]]
    for _, image_path, label_path in pairs:
        for p in (image_path, label_path):
            if not p.is_file():
                raise GVSLInputError(f"{path}: lists {p.relative_to(folder)}, which is not there")
    labels = {int(k): str(v) for k, v in description["labels"].items()}
    label_map = {v: v for v in labels}
    if sorted(labels) != list(range(len(labels))):
        raise GVSLInputError(f"{path}: labels {sorted(labels)} are not 0..{len(labels) - 1}")
    classes = tuple(labels[k] for k in sorted(labels) if k)
    _segmentation_from_pairs(dest, req, task, pairs, label_map, classes, "",
                             {"dataset": f"MSD {description['name']}", "modality": modality,
                              "description": str(path.relative_to(root))})


def _case_id(path: Path) -> str:
    suffix = volume_suffix(path) or path.suffix
    return path.name[: -len(suffix)] if suffix else path.name


def _pretrain_from_files(dest: Path, req: PrepareRequest, files: Sequence[Path], modality: str,
                         generator: dict[str, Any]) -> None:
    """Unlabeled pre-training set: every file, canonical, resampled, windowed, whole (no crop)."""
    root = _require_root(req)
    if not files:
        raise GVSLInputError(f"{root}: no images listed for pre-training")
    ids: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise GVSLInputError(f"{path}: file not found")
        _unique_ids(ids, path, _case_id(path))
    chosen = sorted(ids)
    if req.subjects is not None and req.subjects < len(chosen):
        keep = np.random.default_rng(req.seed).permutation(len(chosen))[: req.subjects]
        chosen = sorted(chosen[i] for i in keep)
    spacing = _spacing(req, PAPER_SPACING)
    offset = _offset(req)
    writer = DatasetWriter(dest, "pretrain")
    for case_id in _progress(chosen, req, f"{req.source} pretrain"):
        array, affine = _standardise(read_volume(ids[case_id]), spacing)
        writer.add(case_id, "train", _window(array, modality, offset, str(ids[case_id])), affine,
                   source_image=str(ids[case_id].relative_to(root)))
    writer.finish(DatasetInfo(task="pretrain", classes=(), spacing=spacing, source=req.source,
                              window=_window_info(modality, offset),
                              generator={"root": str(req.root), "seed": req.seed, "subjects": req.subjects,
                                         "modality": modality, **generator}))


def _build_folder(dest: Path, req: PrepareRequest, task: str) -> None:
    root = _require_root(req)
    files = [p for p in _visible(root.rglob("*")) if volume_suffix(p)]
    if not files:
        raise GVSLInputError(f"{root}: no volumes found (looked for *{', *'.join(VOLUME_SUFFIXES)})")
    _pretrain_from_files(dest, req, files, req.modality or "ct", {"dataset": "folder"})


SOURCES: dict[str, SourceSpec] = {
    "phantom-ct": SourceSpec(_build_phantom_ct, ("pretrain", "SHC", "SAC", "CCC"), True,
                             "generated thorax CT cohorts (default profile)"),
    "mni-brain": SourceSpec(_build_mni_brain, ("SBM",), True, "generated brain MR cohort (SBM analog)"),
    "mmwhs": SourceSpec(_build_mmwhs, ("SHC",), False, "MM-WHS 2017 CT (ct_*_image/label.nii.gz)"),
    "asoca": SourceSpec(_build_asoca, ("SAC",), False, "ASOCA 2020 (CTCA/*.nrrd + Annotations/*.nrrd)"),
    "stoic": SourceSpec(_build_stoic, ("CCC",), False, "STOIC 2021 (*.mha + reference.csv)"),
    "candi": SourceSpec(_build_candi, ("SBM",), False, "CANDI T1 (*_procimg.nii.gz + *_seg.nii.gz)"),
    "msd": SourceSpec(_build_msd, ("MSD", "pretrain"), False, "Medical Segmentation Decathlon task folder"),
    "folder": SourceSpec(_build_folder, ("pretrain",), False, "your own unlabeled scans (any readable volumes)"),
}
