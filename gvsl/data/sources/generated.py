"""The generated cohorts of the default profile: ``phantom-ct`` (chest CT: pretrain, SHC, SAC, CCC) and
``mni-brain`` (brain MR: SBM), one seed per subject (:func:`~gvsl.data.sources.splits.subject_seed`).

Regions of interest of the generated chest CTs are placed **without the case's labels**, as a user's
preprocessing of a new scan would have to: SHC and SAC crop a fixed physical box
(:func:`~gvsl.data.sources.conventions.fixed_roi`: ``ROI_MM["phantom-heart"]`` /
``ROI_MM["phantom-coronary"]``) centred a fixed offset (``ROI_CENTRE_MM``) from the field of view's
centre, where the heart / coronaries sit on average. The subjects' whole-body pose (shift, rotation, size,
:class:`gvsl.data.cohorts.phantom.BodyPose`) then moves the heart inside the ROI from case to case, as in scans
whose field of view a technician centred on the chest; the boxes are sized so that every subject's heart
(all seven labels) or coronaries stay inside (seeds 0-199 checked by the tests; a case that would be cut
is reported by a warning). CCC crops the lung box the generator knows (thresholding, the STOIC path, finds
the same lungs without labels on fine grids). ``info.json``'s ``generator.roi`` says which.

The real datasets keep the paper's preprocessing instead: MM-WHS and ASOCA crop a box centred on the
case's own label box (:mod:`gvsl.data.sources.segmentation`), which the paper did and which puts every
heart at the same place in its crop; CANDI and mni-brain crop a box centred on the labelled brain.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gvsl.data.dataset import SPLITS, DatasetWriter
from gvsl.data.io import Volume, check_label_values
from gvsl.data.preprocess import centred_roi, crop_or_pad, ct_window, foreground_box, roi_shape
from gvsl.data.sources.conventions import (
    ROI_CENTRE_MM,
    ROI_MM,
    brain_crop,
    cut_warning,
    finish_dataset,
    fixed_roi,
    margin_voxels,
    standardise,
)
from gvsl.data.sources.splits import PHANTOM_COUNTS, SUBJECT_SEED_RULE, scale_counts, subject_seed
from gvsl.errors import GVSLInputError

if TYPE_CHECKING:
    from gvsl.data.sources.request import PrepareRequest

__all__ = ["build_mni_brain", "build_phantom_ct"]


def _phantom_module(name: str):
    # Imported on use: the generators are only needed by the generated sources.
    return importlib.import_module(f"gvsl.data.cohorts.{name}")


def _split_counts(req: PrepareRequest, task: str) -> tuple[int, ...]:
    defaults = PHANTOM_COUNTS[task]
    if req.subjects is None:
        return defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asking for another cohort size is deliberate here
        return scale_counts(defaults, req.subjects, what=f"{req.source} {task}")


def build_phantom_ct(dest: Path, req: PrepareRequest, task: str) -> None:
    phantom = _phantom_module("phantom")
    spacing = req.target_spacing((5.0, 5.0, 5.0))
    shape = tuple(req.shape or (64, 64, 64))
    offset = req.offset
    roi_kind = {"CCC": "phantom-lung", "SAC": "phantom-coronary"}.get(task, "phantom-heart")
    roi_mm = req.roi_mm or ROI_MM[roi_kind]
    crop_shape = roi_shape(roi_mm, spacing)
    cut: list[str] = []
    margin = margin_voxels(spacing)
    counts = _split_counts(req, task)
    writer = DatasetWriter(dest, task)
    affine = np.diag([*spacing, 1.0])
    plan = [(split, i) for split, n in zip(SPLITS, counts) for i in range(n)]
    for index, (split, within) in enumerate(req.progress_bar(plan, f"phantom-ct {task}")):
        seed = subject_seed(req.seed, task, index)
        case_id = f"{task.lower()}_{index:04d}"
        # CCC: alternate the class inside each split so every split is balanced.
        opacity = bool(within % 2) if task == "CCC" else None
        subject = phantom.generate_subject(seed, shape=shape, spacing=spacing, opacity=opacity)
        volume = Volume(np.asarray(subject.image_hu, dtype=np.float32), affine, Path(case_id))
        hu, hu_affine = standardise(volume, spacing)
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
        label, _ = standardise(Volume(np.asarray(mask, dtype=np.uint8), affine, Path(case_id)), spacing, label=True)
        if foreground_box(label) is None:
            raise GVSLInputError(f"{case_id} (seed {seed}): empty {task} label")
        # placed from the image grid alone: the labels only check what the crop kept
        roi = fixed_roi(hu.shape, spacing, roi_mm, ROI_CENTRE_MM[roi_kind])
        image, image_affine = crop_or_pad(ct_window(hu, offset), hu_affine, roi)
        cropped, _ = crop_or_pad(label, hu_affine, roi)
        if np.count_nonzero(cropped) < np.count_nonzero(label):
            cut.append(case_id)
        writer.add(case_id, split, image, image_affine, label=cropped, seed=seed)
    cut_warning(cut, f"phantom-ct {task}")
    classes = {"pretrain": (), "SHC": phantom.HEART_CLASSES, "SAC": ("coronary_artery",), "CCC": ("opacity",)}[task]
    generator = {
        "generator": "gvsl.data.cohorts.phantom",
        "seed": req.seed,
        "shape": list(shape),
        "split_counts": list(counts),
        "subject_seed": SUBJECT_SEED_RULE,
    }
    if task != "pretrain":
        roi = (
            "lung box (the generator's lungs)"
            if task == "CCC"
            else f"fixed box, no labels: centred {list(ROI_CENTRE_MM[roi_kind])} mm from the field of view's centre"
        )
        generator.update(roi=roi, roi_mm=list(roi_mm), roi_shape=list(crop_shape), margin_voxels=margin)
    finish_dataset(writer, req, task, classes, spacing, ("ct", offset), generator)


def build_mni_brain(dest: Path, req: PrepareRequest, task: str) -> None:
    brain = _phantom_module("brain")
    spacing = req.target_spacing((4.0, 4.0, 4.0))
    shape = tuple(req.shape or (48, 57, 51))
    roi_mm = req.roi_mm or ROI_MM["phantom-brain"]
    crop_shape = roi_shape(roi_mm, spacing)
    counts = _split_counts(req, task)
    writer = DatasetWriter(dest, task)
    classes = tuple(brain.BRAIN_CLASSES)
    plan = [split for split, n in zip(SPLITS, counts) for _ in range(n)]
    cut: list[str] = []
    for index, split in enumerate(req.progress_bar(plan, "mni-brain SBM")):
        seed = subject_seed(req.seed, task, index)
        case_id = f"sbm_{index:04d}"
        subject = brain.generate_subject(seed, shape=shape, spacing=spacing)
        image = Volume(np.asarray(subject.image, dtype=np.float32), np.asarray(subject.affine, float), Path(case_id))
        label = Volume(np.asarray(subject.label), image.affine, Path(case_id))
        check_label_values(label, range(len(classes) + 1))
        image_array, label_array, out_affine = brain_crop(image, label, spacing, crop_shape, case_id, cut)
        writer.add(case_id, split, image_array, out_affine, label=label_array.astype(np.uint8), seed=seed)
    cut_warning(cut, "mni-brain")
    recorded = {
        "generator": "gvsl.data.cohorts.brain",
        "seed": req.seed,
        "shape": list(shape),
        "split_counts": list(counts),
        "roi": "brain centre",
        "roi_mm": list(roi_mm),
        "roi_shape": list(crop_shape),
        "subject_seed": SUBJECT_SEED_RULE,
    }
    finish_dataset(writer, req, task, classes, spacing, ("mr", 0.0), recorded)
