"""Stand-ins for the paper's datasets, in the formats and folder layouts the datasets ship in.

Each writer lays a folder out as its dataset does, with that dataset's file format, file names,
label values, stored orientation and metadata, so that the matching source of
:mod:`gvsl.data.sources` reads it exactly as it reads the real download. The voxels are the kit's
generated subjects (:mod:`gvsl.data.cohorts.phantom` chest CTs, :mod:`gvsl.data.cohorts.brain` brain MRs): nothing
here is real data. ``make rehearse-paper`` (:mod:`gvsl.rehearsal`) runs the paper profile on them,
so that a reader, a split or a label map that would fail on the real data fails here first.

=========  ==================================================================  =========================
folder     files                                                               stored as
=========  ==================================================================  =========================
mmwhs      ``ct_train_1001_image.nii.gz`` + ``ct_train_1001_label.nii.gz``     int16 HU; labels 205…850
asoca      ``{Normal,Diseased}/CTCA/<case>.nrrd`` + ``…/Annotations/<case>.nrrd``  gzip NRRD in LPS, 0/1 mask
stoic      ``data/mha/<PatientID>.mha`` + ``metadata/reference.csv``           compressed MetaImage (ITK)
candi      ``SchizBull_2008/<group>/<case>/<case>_procimg.nii.gz`` + ``_seg``  uint8 T1 in LIA; FreeSurfer labels
pretrain   unlabeled chest CT: ``nifti/*.nii.gz``, ``nrrd/*.nrrd``, ``mha/*.mha``  as the three above
=========  ==================================================================  =========================

CT volumes are stored as scanners write them: the first two array axes run right→left and
anterior→posterior (NIfTI affine ``diag(-s, -s, s)``; NRRD and MetaImage with the identity direction
in their LPS world), so every reader's reorientation to RAS+ is exercised. Writing ``.mha`` needs
ITK, the optional extra that reading it needs too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gvsl.data.cohorts import brain, phantom
from gvsl.data.io import LPS_TO_RAS, write_nifti
from gvsl.data.sources import FREESURFER_NAMES, MMWHS_LABELS, STOIC_COLUMNS, subject_seed
from gvsl.errors import GVSLInputError

__all__ = ["FIXTURE_COUNTS", "WRITERS", "write_fixture"]

#: cases per stand-in: enough for every split of the paper's proportions, and two MM-WHS validation
#: subjects for pre-training's held-out pairs
FIXTURE_COUNTS = {"folder": 6, "mmwhs": 20, "asoca": 8, "stoic": 20, "candi": 10}

# Generated grids: 320 × 320 × 325 mm holds a chest CT's field of view; 3 mm keeps the 7 mm coronaries
# about two voxels across; 4 mm brains hold the whole labelled MNI brain. Slices are thicker than the
# in-plane spacing, as in CT, so that a spacing read onto the wrong axis shows.
_CT_GRID = ((64, 64, 52), (5.0, 5.0, 6.25))
_CORONARY_GRID = ((80, 80, 64), (3.0, 3.0, 3.75))
_BRAIN_GRID = ((48, 48, 40), (4.0, 4.0, 4.0))
# FreeSurfer's conformed orientation, which CANDI's volumes were processed into
_CONFORMED = ("L", "I", "A")
# CANDI's groups (folder, case prefix) and the FreeSurfer values of the generator's tissues by
# hemisphere (left, right): lateral ventricles (all CSF), cortex (grey matter, cerebellum), white matter.
_CANDI_GROUPS = (("BPDwithPsy", "BPDwPsy"), ("BPDwithoutPsy", "BPDwoPsy"), ("HC", "HC"), ("SS", "SS"))
_FREESURFER_TISSUES = {
    "ventricles": (4, 43),
    "external_csf": (4, 43),
    "left_grey_matter": (3, 42),
    "right_grey_matter": (3, 42),
    "left_white_matter": (2, 41),
    "right_white_matter": (2, 41),
    "cerebellum": (3, 42),
}


def _scanner_storage(array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A generated RAS-ordered array as scanners store it (axes 0, 1 reversed) and its RAS+ affine."""
    stored = np.ascontiguousarray(array[::-1, ::-1, :])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:2, 3] = [(n - 1) * s for n, s in zip(array.shape[:2], spacing[:2])]
    return stored, affine


def _conformed_storage(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A RAS-ordered array as FreeSurfer stores it (axes left, inferior, anterior) and its RAS+ affine."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(_CONFORMED)
    )
    stored = np.ascontiguousarray(nib.orientations.apply_orientation(array, transform))
    return stored, affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


def _hu(subject: phantom.PhantomSubject) -> np.ndarray:
    return np.round(subject.image_hu).astype(np.int16)


def _write_nrrd(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nrrd  # pynrrd, the reader's own library (an optional extra)

    lps = LPS_TO_RAS @ affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "encoding": "gzip",
        "kinds": ["domain"] * 3,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), array, header)


def _write_mha(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    try:
        import itk
    except ImportError as err:
        raise GVSLInputError(f"{path}: writing MetaImage needs ITK: pip install 'gvsl-kit[itk]'") from err
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = itk.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0)))  # ITK arrays are (k, j, i)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    itk.imwrite(image, str(path), compression=True)


def _chest(seed: int, grid=_CT_GRID, opacity: bool | None = None) -> phantom.PhantomSubject:
    shape, spacing = grid
    return phantom.generate_subject(seed, shape=shape, spacing=spacing, opacity=opacity)


def write_mmwhs(root: Path, count: int, seed: int) -> dict[str, int]:
    """MM-WHS 2017 CT: NIfTI pairs, the seven structures under their MM-WHS label values."""
    if tuple(MMWHS_LABELS.values()) != phantom.HEART_CLASSES:
        raise AssertionError("the generator's heart classes must follow MM-WHS's label order")
    values = np.array([0, *MMWHS_LABELS], dtype=np.uint16)
    seeds = {}
    for index in range(count):
        case = f"ct_train_{1001 + index}"
        subject = _chest(seeds.setdefault(case, subject_seed(seed, "SHC", index)))
        image, affine = _scanner_storage(_hu(subject), subject.spacing)
        label, _ = _scanner_storage(values[subject.heart], subject.spacing)
        root.mkdir(parents=True, exist_ok=True)
        write_nifti(root / f"{case}_image.nii.gz", image, affine)
        write_nifti(root / f"{case}_label.nii.gz", label, affine)
    return seeds


def write_asoca(root: Path, count: int, seed: int) -> dict[str, int]:
    """ASOCA 2020: NRRD images under ``<group>/CTCA``, coronary masks under ``<group>/Annotations``."""
    seeds = {}
    for index in range(count):
        group = ("Normal", "Diseased")[index % 2]
        case = f"{group}_{index // 2 + 1}"
        subject = _chest(seeds.setdefault(case, subject_seed(seed, "SAC", index)), grid=_CORONARY_GRID)
        image, affine = _scanner_storage(_hu(subject), subject.spacing)
        mask, _ = _scanner_storage(subject.coronary.astype(np.uint8), subject.spacing)
        _write_nrrd(root / group / "CTCA" / f"{case}.nrrd", image, affine)
        _write_nrrd(root / group / "Annotations" / f"{case}.nrrd", mask, affine)
    return seeds


def write_stoic(root: Path, count: int, seed: int) -> dict[str, int]:
    """STOIC 2021: one MetaImage per PatientID and ``metadata/reference.csv`` with the targets."""
    rows, seeds = [], {}
    for index in range(count):
        covid = bool(index % 2)
        patient = str(index + 1)
        subject = _chest(seeds.setdefault(patient, subject_seed(seed, "CCC", index)), opacity=covid)
        image, affine = _scanner_storage(_hu(subject), subject.spacing)
        _write_mha(root / "data" / "mha" / f"{patient}.mha", image, affine)
        rows.append({"PatientID": patient, "probCOVID": int(covid), "probSevere": int(covid and index % 4 == 1)})
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(STOIC_COLUMNS)).to_csv(root / "metadata" / "reference.csv", index=False)
    return seeds


def _freesurfer_labels(subject: brain.BrainSubject) -> np.ndarray:
    """The generator's tissues as FreeSurfer aseg values, split into hemispheres at world x = 0."""
    x = subject.affine[0, 0] * np.arange(subject.label.shape[0]) + subject.affine[0, 3]
    right = (x > 0)[:, None, None]
    values = np.zeros(subject.label.shape, dtype=np.int16)
    for tissue_id, name in enumerate(brain.BRAIN_CLASSES, start=1):
        left_value, right_value = _FREESURFER_TISSUES[name]
        values[(subject.label == tissue_id) & ~right] = left_value
        values[(subject.label == tissue_id) & right] = right_value
    assert set(np.unique(values)) - {0} <= set(FREESURFER_NAMES)
    return values


def write_candi(root: Path, count: int, seed: int) -> dict[str, int]:
    """CANDI (SchizBull 2008): one folder per case, uint8 T1 and its FreeSurfer-valued segmentation."""
    shape, spacing = _BRAIN_GRID
    seeds = {}
    for index in range(count):
        group, prefix = _CANDI_GROUPS[index % len(_CANDI_GROUPS)]
        case = f"{prefix}_{index + 1:03d}"
        subject = brain.generate_subject(
            seeds.setdefault(case, subject_seed(seed, "SBM", index)), shape=shape, spacing=spacing
        )
        folder = root / "SchizBull_2008" / group / case
        folder.mkdir(parents=True, exist_ok=True)
        image, affine = _conformed_storage(np.round(subject.image * 255).astype(np.uint8), subject.affine)
        labels, _ = _conformed_storage(_freesurfer_labels(subject), subject.affine)
        write_nifti(folder / f"{case}_procimg.nii.gz", image, affine)
        write_nifti(folder / f"{case}_seg.nii.gz", labels, affine)
    return seeds


def write_ct_folder(root: Path, count: int, seed: int) -> dict[str, int]:
    """Unlabeled chest CT for pre-training, in each format the ``folder`` source reads, in turn."""
    writers = (("nifti", ".nii.gz", write_nifti), ("nrrd", ".nrrd", _write_nrrd), ("mha", ".mha", _write_mha))
    seeds = {}
    for index in range(count):
        folder, suffix, write = writers[index % len(writers)]
        case = f"chest_{index:03d}"
        # scans of one folder differ in their slice count, as a cohort's do
        (width, height, slices), spacing = _CT_GRID
        grid = ((width, height, slices - 4 * (index % 3)), spacing)
        subject = _chest(seeds.setdefault(case, subject_seed(seed, "pretrain", index)), grid=grid)
        image, affine = _scanner_storage(_hu(subject), subject.spacing)
        (root / folder).mkdir(parents=True, exist_ok=True)
        write(root / folder / f"{case}{suffix}", image, affine)
    return seeds


#: source of :data:`gvsl.data.sources.SOURCES` -> the writer of its stand-in
WRITERS: Mapping[str, Callable[[Path, int, int], dict[str, int]]] = {
    "mmwhs": write_mmwhs,
    "asoca": write_asoca,
    "stoic": write_stoic,
    "candi": write_candi,
    "folder": write_ct_folder,
}


def write_fixture(source: str, root: str | Path, *, count: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write the stand-in of ``source`` into ``root`` (``count`` cases, default :data:`FIXTURE_COUNTS`).

    Returns each case id with the seed of the generated subject it holds
    (:func:`gvsl.data.sources.subject_seed` of ``seed``, as the generated sources draw them).
    """
    if source not in WRITERS:
        raise GVSLInputError(f"no stand-in for source {source!r} (have: {', '.join(WRITERS)})")
    return WRITERS[source](Path(root), FIXTURE_COUNTS[source] if count is None else count, seed)
