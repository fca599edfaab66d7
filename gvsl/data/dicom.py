"""Reading DICOM series: one file per slice, as a scanner or a PACS exports a CT or MR.

The files are read with pydicom; the kit groups and stacks them itself. MONAI's ``PydicomReader`` was
checked for this and does not fit: it orders slices by InstanceNumber, takes the slice spacing from the
z coordinate alone (wrong for sagittal and coronal stacks), reads every file of a folder as one series,
and only warns about slices that do not fit together, so a missing slice or a tilted gantry would give a
silently distorted volume.

- Slices are grouped by SeriesInstanceUID and ordered by their position along the slice normal: the
  ImagePositionPatient of each slice projected on row × column of ImageOrientationPatient, whatever the
  file names or instance numbers say.
- The Modality LUT (RescaleSlope / RescaleIntercept) is applied, so CT voxels are in HU.
- The affine maps (column, row, slice) indices to DICOM's LPS patient coordinates and is converted to the
  kit's RAS+ world as for NRRD (:data:`gvsl.data.io.LPS_TO_RAS`): array axis 0 runs along the row
  direction cosine, axis 1 along the column direction cosine, axis 2 along the slice normal.
- A series that cannot be stacked onto a regular grid is an error naming a file: slice positions off
  the slice normal (gantry tilt, a sheared stack), uneven spacing, missing slices, two slices at one
  position, slices with different orientation, size or pixel spacing, multi-frame files, colour images.
  The tolerance is :data:`SLICE_TOLERANCE` of the slice spacing (along the normal) or of the smallest
  pixel spacing (across the slice plane).
- Pixel data is decoded by whatever pydicom has: uncompressed and RLE Lossless always; JPEG Baseline
  and JPEG 2000 through Pillow; JPEG Lossless and JPEG-LS need a plugin (pylibjpeg-libjpeg or GDCM).
  A transfer syntax no installed plugin decodes is an error before any pixel is read.

pydicom is imported when a DICOM file is first looked at, not with this module.
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gvsl.data.io import LPS_TO_RAS, Volume
from gvsl.errors import GVSLInputError

__all__ = [
    "DICOM_SUFFIXES",
    "SLICE_TOLERANCE",
    "DicomSeries",
    "find_dicom_series",
    "is_dicom_file",
    "read_dicom_series",
]

#: file endings that claim to be DICOM: such a file that is not DICOM is an error, not skipped
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: largest deviation of a slice from the regular grid, as a fraction of the slice spacing (along the
#: normal) or of the smallest pixel spacing (across the slice plane)
SLICE_TOLERANCE = 0.1
# orientation cosines and pixel spacings of one series agree to this (DICOM writes them as decimal strings)
_COSINE_ATOL = 1e-3
_SPACING_RTOL = 1e-3


def _one_line(err: BaseException) -> str:
    """``err`` as one line (pydicom's messages often span several)."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: it has the ``DICM`` marker after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _floats(ds: Any, keyword: str, count: int, path: Path) -> tuple[float, ...] | None:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    value = ds[keyword].value
    try:
        numbers = tuple(
            float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])
        )
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not np.isfinite(numbers).all():
        raise GVSLInputError(f"{path}: {keyword} {value!s} is not {count} finite number(s)")
    return numbers


def _strings(value: Any) -> tuple[str, ...]:
    """A multi-valued code string as upper-case strings (a single value too)."""
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in values)


@dataclass(frozen=True)
class _Slice:
    """What the kit needs of one DICOM file's header (pixels are read later)."""

    path: Path
    series_uid: str
    modality: str
    has_image: bool
    what: str  # SOP class name, for messages
    image_type: tuple[str, ...] = ()
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples: int = 1
    orientation: tuple[float, ...] | None = None
    position: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    thickness: float | None = None
    transfer_syntax: str = ""


def _read_header(path: Path) -> _Slice:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises InvalidDicomError, EOFError, struct.error, ValueError…
        raise GVSLInputError(f"{path}: unreadable DICOM file ({_one_line(err)})") from err
    sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    what = getattr(sop, "name", str(sop or "unknown SOP class"))
    has_image = "Rows" in ds and "Columns" in ds
    common = {
        "path": path,
        "series_uid": str(ds.get("SeriesInstanceUID", "")).strip(),
        "modality": str(ds.get("Modality", "")).strip().upper(),
        "has_image": has_image,
        "what": what,
    }
    if not has_image:
        return _Slice(**common)
    thickness = _floats(ds, "SpacingBetweenSlices", 1, path) or _floats(ds, "SliceThickness", 1, path)
    try:
        sizes = {
            k: int(ds.get(k) or default)
            for k, default in (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1))
        }
    except (TypeError, ValueError) as err:
        raise GVSLInputError(f"{path}: unreadable image size ({_one_line(err)})") from err
    return _Slice(
        **common,
        image_type=_strings(ds.get("ImageType")),
        rows=sizes["Rows"],
        columns=sizes["Columns"],
        frames=sizes["NumberOfFrames"],
        samples=sizes["SamplesPerPixel"],
        orientation=_floats(ds, "ImageOrientationPatient", 6, path),
        position=_floats(ds, "ImagePositionPatient", 3, path),
        pixel_spacing=_floats(ds, "PixelSpacing", 2, path),
        thickness=thickness[0] if thickness else None,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
    )


@functools.cache
def _decodable(transfer_syntax: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:  # pydicom has no decoder at all for it (MPEG, HEVC…)
        return False


def _check_decodable(item: _Slice) -> None:
    """Raise unless an installed pydicom decoder handles the file's transfer syntax."""
    if not item.transfer_syntax:
        return  # no file meta: pydicom guesses an uncompressed syntax
    from pydicom.uid import UID

    if not _decodable(item.transfer_syntax):
        uid = UID(item.transfer_syntax)
        raise GVSLInputError(
            f"{item.path}: transfer syntax {uid.name} ({uid}) cannot be decoded here (pydicom reads uncompressed "
            "and RLE Lossless, Pillow adds JPEG Baseline and JPEG 2000): decompress the series (e.g. gdcmconv "
            "--raw) or install a pydicom plugin (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"
        )


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One DICOM series, checked to stack onto a regular grid; :meth:`read` decodes its pixels.

    Attributes:
        uid: its SeriesInstanceUID.
        files: one file per slice, ordered along the slice normal.
        affine: (4, 4) voxel index -> RAS+ world (mm) of the stacked volume.
        shape: (columns, rows, slices), the shape :meth:`read` returns.
        modality: DICOM Modality (``CT``, ``MR``…).
        name: the case id the folder source gives it (see :func:`find_dicom_series`).
    """

    uid: str
    files: tuple[Path, ...]
    affine: np.ndarray = field(repr=False)
    shape: tuple[int, int, int]
    modality: str = ""
    name: str = ""

    @property
    def folder(self) -> Path:
        """The deepest folder holding all its files."""
        return Path(os.path.commonpath([str(p.parent) for p in self.files]))

    def read(self) -> Volume:
        """Decode the slices, apply the Modality LUT (HU for CT) and stack them: a float32 :class:`Volume`."""
        import pydicom
        from pydicom.pixels import apply_modality_lut

        columns, rows, _ = self.shape
        array = np.empty(self.shape, dtype=np.float32)
        for k, path in enumerate(self.files):
            try:
                ds = pydicom.dcmread(path)
                pixels = apply_modality_lut(ds.pixel_array, ds)
            except Exception as err:  # decoders raise RuntimeError, ValueError…; truncated files among them
                raise GVSLInputError(f"{path}: cannot decode the pixel data ({_one_line(err)})") from err
            if pixels.shape != (rows, columns):
                raise GVSLInputError(f"{path}: pixel data of shape {pixels.shape}, expecting ({rows}, {columns})")
            array[:, :, k] = pixels.T  # (row, column) -> (column, row): axis 0 runs along the row direction
        return Volume(array, self.affine.copy(), self.folder)


def _same(values: Sequence[tuple[float, ...]], *, atol: float = 0.0, rtol: float = 0.0) -> int | None:
    """Index of the first value that differs from the first one, or None."""
    first = np.asarray(values[0])
    for index, value in enumerate(values):
        if not np.allclose(value, first, atol=atol, rtol=rtol):
            return index
    return None


def _stack(slices: Sequence[_Slice], uid: str) -> DicomSeries:
    """Order ``slices`` along their normal, check that they form a regular grid, and build the affine."""
    first = slices[0]
    for what, values, tolerance in (
        ("size (rows, columns)", [(s.rows, s.columns) for s in slices], {}),
        ("ImageOrientationPatient", [s.orientation for s in slices], {"atol": _COSINE_ATOL}),
        ("PixelSpacing", [s.pixel_spacing for s in slices], {"rtol": _SPACING_RTOL}),
    ):
        if (index := _same(values, **tolerance)) is not None:
            raise GVSLInputError(
                f"{slices[index].path}: {what} {values[index]} differs from {values[0]} of "
                f"{first.path.name} in the same series {uid}"
            )
    row_dir, col_dir = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    if (
        abs(np.linalg.norm(row_dir) - 1) > _COSINE_ATOL
        or abs(np.linalg.norm(col_dir) - 1) > _COSINE_ATOL
        or abs(row_dir @ col_dir) > _COSINE_ATOL
    ):
        raise GVSLInputError(
            f"{first.path}: ImageOrientationPatient {first.orientation} is not two orthogonal unit vectors"
        )
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    positions = np.asarray([s.position for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices, positions, along = [slices[i] for i in order], positions[order], along[order]
    row_spacing, col_spacing = first.pixel_spacing  # between rows (along col_dir), between columns (along row_dir)
    if len(slices) == 1:
        if first.thickness is None or first.thickness <= 0:
            raise GVSLInputError(f"{first.path}: a single slice without SpacingBetweenSlices or SliceThickness")
        step = first.thickness
    else:
        steps = np.diff(along)
        typical = float(np.median(steps))
        if typical <= 0 or steps.min() < SLICE_TOLERANCE * typical:
            i = int(np.argmin(steps))
            raise GVSLInputError(
                f"{slices[i + 1].path}: two slices at one position ({along[i]:.3f} mm along the "
                f"slice normal) in series {uid}, with {slices[i].path.name}"
            )
        # Gantry tilt (or any shear): the positions leave the line through the first slice along the normal.
        offsets = positions - positions[0]
        across = offsets - np.outer(offsets @ normal, normal)
        drift = np.linalg.norm(across, axis=1)
        if drift.max() > SLICE_TOLERANCE * min(row_spacing, col_spacing):
            i = int(np.argmax(drift))
            angle = np.degrees(np.arctan2(drift[i], along[i] - along[0]))
            raise GVSLInputError(
                f"{slices[i].path}: slice positions leave the slice normal by {drift[i]:.2f} mm ({angle:.1f}° off "
                f"row × column: gantry tilt or a sheared stack) in series {uid}; the kit does not resample tilted "
                "series (resample it first, e.g. dcm2niix corrects gantry tilt)"
            )
        step = (along[-1] - along[0]) / (len(slices) - 1)
        off_grid = np.abs(along - (along[0] + step * np.arange(len(slices))))
        if off_grid.max() > SLICE_TOLERANCE * step or np.abs(steps - typical).max() > SLICE_TOLERANCE * typical:
            ratios = steps / typical
            gaps = np.flatnonzero((np.round(ratios) >= 2) & (np.abs(ratios - np.round(ratios)) <= SLICE_TOLERANCE))
            if gaps.size:
                i = int(gaps[0])
                missing = int(np.round(ratios[gaps]).sum() - gaps.size)
                raise GVSLInputError(
                    f"{slices[i + 1].path}: {missing} missing slice(s) in series {uid}: a gap of {steps[i]:.3g} mm "
                    f"after {slices[i].path.name} where slices are {typical:.3g} mm apart"
                )
            i = int(np.argmax(np.abs(steps - typical)))
            raise GVSLInputError(
                f"{slices[i + 1].path}: uneven slice spacing in series {uid}: steps from {steps.min():.3g} to "
                f"{steps.max():.3g} mm along the slice normal ({steps[i]:.3g} mm after {slices[i].path.name})"
            )
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing  # axis 0: the column index, along the row direction
    affine[:3, 1] = col_dir * row_spacing  # axis 1: the row index, along the column direction
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    return DicomSeries(
        uid,
        tuple(s.path for s in slices),
        LPS_TO_RAS @ affine,
        (first.columns, first.rows, len(slices)),
        first.modality,
    )


def _check_image(item: _Slice) -> None:
    if item.frames > 1:
        raise GVSLInputError(
            f"{item.path}: multi-frame DICOM ({item.frames} frames in one file) is not read; "
            "convert it to NIfTI first (e.g. dcm2niix)"
        )
    if item.samples != 1:
        raise GVSLInputError(f"{item.path}: {item.samples} samples per pixel (a colour image), expecting grey values")
    for keyword, value in (
        ("ImageOrientationPatient", item.orientation),
        ("ImagePositionPatient", item.position),
        ("PixelSpacing", item.pixel_spacing),
    ):
        if value is None:
            raise GVSLInputError(f"{item.path}: no {keyword}, so its slice cannot be placed in the patient")
    if item.rows < 1 or item.columns < 1:
        raise GVSLInputError(f"{item.path}: empty image ({item.rows} rows, {item.columns} columns)")
    if min(item.pixel_spacing) <= 0:
        raise GVSLInputError(f"{item.path}: PixelSpacing {item.pixel_spacing} is not positive")
    _check_decodable(item)


def read_dicom_series(files: Iterable[str | Path]) -> Volume:
    """Read the files of one DICOM series (any order) as a :class:`Volume` in HU (CT), RAS+ affine.

    One file gives a one-slice volume whose slice spacing is SpacingBetweenSlices or SliceThickness.

    Raises:
        GVSLInputError: no files, files of several series, unreadable files, or a series that does not
            stack onto a regular grid (see the module docstring).
    """
    items = [_read_header(Path(p)) for p in files]
    if not items:
        raise GVSLInputError("no DICOM files given")
    uids = sorted({s.series_uid for s in items})
    if len(uids) > 1:
        raise GVSLInputError(f"{items[0].path.parent}: files of {len(uids)} series ({', '.join(uids)})")
    for item in items:
        if not item.has_image:
            raise GVSLInputError(f"{item.path}: holds no image ({item.what})")
        _check_image(item)
    return _stack(items, uids[0]).read()


def _folder_id(folder: Path, root: Path) -> str:
    relative = folder.relative_to(root)
    return "_".join(relative.parts) if relative.parts else root.resolve().name or "dicom"


def find_dicom_series(
    paths: Iterable[Path], root: Path, modality: str | None = None
) -> tuple[list[DicomSeries], list[tuple[str, str]]]:
    """The DICOM volumes among ``paths`` (files under ``root``), each checked, and what was skipped.

    Only headers are read. A file is DICOM when it has the ``DICM`` marker; one named ``*.dcm``,
    ``*.dicom`` or ``*.ima`` that is not DICOM or not readable is an error. Every SeriesInstanceUID is one
    case, wherever its files lie; its name is its folder under ``root`` (path parts joined by ``_``),
    followed by ``_<SeriesInstanceUID>`` when that folder holds several series.

    Skipped, and returned as (name, reason): files that are not DICOM; DICOM objects without an image
    (DICOMDIR, reports, RT structures); series of another modality than ``modality`` (``ct`` reads
    Modality CT, ``mr`` reads MR; None reads any); localizer series (ImageType LOCALIZER); series of one
    image, which are not volumes.

    Raises:
        GVSLInputError: the first series (in path order) that cannot be read as a volume, naming a file.
    """
    wanted = {"ct": "CT", "mr": "MR"}.get(modality or "", None)
    skipped: list[tuple[str, str]] = []
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for path in sorted(paths):
        name = str(path.relative_to(root))
        if not is_dicom_file(path):
            if path.name.lower().endswith(DICOM_SUFFIXES):
                raise GVSLInputError(f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
            skipped.append((name, "not DICOM"))
            continue
        item = _read_header(path)
        if not item.has_image:
            skipped.append((name, f"DICOM without an image ({item.what})"))
            continue
        if not item.series_uid:
            raise GVSLInputError(f"{path}: no SeriesInstanceUID, so its series cannot be told apart")
        groups[item.series_uid].append(item)
    found: list[DicomSeries] = []
    for uid, items in sorted(groups.items(), key=lambda kv: kv[1][0].path):
        label = (
            str(items[0].path.relative_to(root))
            if len(items) == 1
            else f"{os.path.commonpath([str(s.path.parent.relative_to(root)) for s in items])}, {len(items)} files"
        )
        modalities = sorted({s.modality for s in items})
        if wanted is not None and modalities != [wanted]:
            skipped.append((label, f"series of Modality {'/'.join(modalities) or '(none)'}, not {wanted}"))
            continue
        if any("LOCALIZER" in s.image_type for s in items):
            skipped.append((label, "localizer series"))
            continue
        if len(items) == 1 and items[0].frames == 1:
            skipped.append((label, "single-image series"))
            continue
        for item in items:
            _check_image(item)
        found.append(_stack(items, uid))
    # Names: the series' folder; several series in one folder are told apart by their UIDs.
    per_folder: dict[Path, int] = defaultdict(int)
    for series in found:
        per_folder[series.folder] += 1
    named = [
        replace(
            series, name=_folder_id(series.folder, root) + (f"_{series.uid}" if per_folder[series.folder] > 1 else "")
        )
        for series in found
    ]
    return named, skipped
