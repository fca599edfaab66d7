"""Reading and checking 3-D volumes: NIfTI (nibabel), NRRD (pynrrd, else ITK) and MetaImage (ITK).

Every reader returns a :class:`Volume`: the voxel array indexed ``(i, j, k)`` (the file's own axis
order, as nibabel gives it) and a 4×4 voxel-to-world affine in **RAS+ millimetres** (NIfTI's world
convention). NRRD and MetaImage store LPS coordinates; their affines are converted by negating the
first two world axes.

Readers and checks raise :class:`gvsl.errors.GVSLInputError` with one line that names the file:
unreadable or truncated files, arrays that are not 3-D (a trailing singleton fourth axis is
squeezed), NaN/Inf voxels, label grids that differ from their image, unexpected label values.
ITK (``pip install 'gvsl-kit[itk]'``, ~550 MB) is an optional extra used for ``.mha``/``.mhd``
and as a fallback for ``.nrrd``. DICOM series (one file per slice) are read by :mod:`gvsl.data.dicom`
into the same :class:`Volume`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gvsl.errors import GVSLInputError

__all__ = [
    "LPS_TO_RAS",
    "VOLUME_SUFFIXES",
    "Volume",
    "check_label_values",
    "check_same_grid",
    "read_volume",
    "volume_suffix",
    "write_nifti",
]

#: file endings the kit reads, longest first so ``.nii.gz`` wins over ``.gz``
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: LPS (NRRD, ITK) -> RAS (NIfTI) world coordinates: negate the first two world axes (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """One 3-D volume as read from disk.

    Attributes:
        array: voxel values, shape (I, J, K), in the file's axis order.
        affine: (4, 4) voxel index -> RAS+ world coordinates in mm.
        path: the file it came from (for error messages).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (norms of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def volume_suffix(path: str | Path) -> str | None:
    """The recognised ending of ``path`` (``.nii.gz``, ``.nrrd``…), or None."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def _have_itk() -> bool:
    return importlib.util.find_spec("itk") is not None


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    # nibabel reads lazily; a truncated gzip only fails here, when the voxels are decoded.
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _read_nrrd_pynrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    array, header = nrrd.read(str(path))  # index order "F": axes (i, j, k) as in the file
    ndim = array.ndim
    directions = header.get("space directions")
    if directions is None:
        # Unoriented file: only per-axis spacings (or nothing) are known.
        spacings = np.nan_to_num(np.asarray(header.get("spacings", np.ones(ndim)), dtype=float), nan=1.0)
        directions = np.diag(spacings)
    directions = np.asarray(directions, dtype=float)
    # Non-spatial axes (e.g. a vector axis) have a "none" direction that pynrrd reads as NaN rows.
    spatial = ~np.isnan(directions).any(axis=1)
    directions = directions[spatial]
    # "space origin" is optional in NRRD; its absence means the origin is at 0 (pynrrd simply omits the key).
    origin = np.asarray(header.get("space origin", np.zeros(directions.shape[1])), dtype=float)
    if directions.shape[1] != 3:
        # 2-D spatial files; the dimensionality check reports them with the array shape.
        return array, np.eye(4)
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # row n of "space directions" is the world step of axis n
    affine[:3, 3] = origin
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = LPS_TO_RAS @ affine
    elif space not in ("right-anterior-superior", "ras", "scanner-xyz", "3d-right-handed"):
        raise GVSLInputError(f"{path}: unsupported NRRD space {space!r} (expecting LPS or RAS)")
    return array, affine


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import itk

    image = itk.imread(str(path))
    # ITK arrays are (k, j, i); reverse to the (i, j, k) order of the affine.
    array = np.asarray(itk.array_from_image(image))
    dim = image.GetImageDimension()
    if dim != 3:
        return array, np.eye(4)
    spatial_axes = tuple(range(dim))[::-1]
    array = np.transpose(array, spatial_axes + tuple(range(dim, array.ndim)))
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = np.asarray(image.GetOrigin(), dtype=float)
    return array, LPS_TO_RAS @ affine


def _reader(path: Path, suffix: str):
    if suffix in (".nii", ".nii.gz"):
        return _read_nifti
    if suffix in (".nrrd", ".nhdr"):
        if importlib.util.find_spec("nrrd") is not None:
            return _read_nrrd_pynrrd
        if _have_itk():
            return _read_itk
        raise GVSLInputError(f"{path}: reading NRRD needs pynrrd or ITK: pip install 'gvsl-kit[nrrd]'")
    if _have_itk():
        return _read_itk
    raise GVSLInputError(f"{path}: reading {suffix} needs ITK, an optional extra: pip install 'gvsl-kit[itk]'")


def read_volume(path: str | Path, *, kind: str = "image") -> Volume:
    """Read a 3-D volume and check that it is readable, 3-D and finite.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.
        kind: ``"image"`` or ``"label"``; labels must also hold integer values.

    Returns:
        The :class:`Volume`. Trailing singleton axes beyond the third are squeezed.

    Raises:
        GVSLInputError: missing, unreadable or truncated file, wrong dimensionality, NaN/Inf voxels,
            non-integer label values.
    """
    path = Path(path)
    if not path.is_file():
        raise GVSLInputError(f"{path}: file not found")
    suffix = volume_suffix(path)
    if suffix is None:
        raise GVSLInputError(f"{path}: unknown volume format (expecting one of {', '.join(VOLUME_SUFFIXES)})")
    reader = _reader(path, suffix)
    try:
        array, affine = reader(path)
    except GVSLInputError:
        raise
    except Exception as err:  # each library raises its own types (EOFError, zlib.error, OSError, RuntimeError…)
        raise GVSLInputError(f"{path}: unreadable or truncated {suffix} file ({type(err).__name__}: {err})") from err
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise GVSLInputError(f"{path}: expecting a 3-D volume, got {array.ndim}-D shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise GVSLInputError(f"{path}: expecting real-valued voxels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise GVSLInputError(f"{path}: {int(bad.sum())} NaN/Inf voxels")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GVSLInputError(f"{path}: degenerate voxel-to-world affine {affine[:3].tolist()}")
    if kind == "label" and np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise GVSLInputError(f"{path}: label volume holds non-integer values")
        array = array.astype(np.int64)
    return Volume(np.asarray(array), affine, path)


def check_same_grid(image: Volume, label: Volume, *, atol_mm: float = 1e-3) -> None:
    """Raise unless ``label`` lies on the voxel grid of ``image`` (same shape, affines within ``atol_mm``).

    The tolerance is relative to the voxel size: entries may differ by ``atol_mm`` times the largest
    spacing, which absorbs float32 header rounding but not a shifted or resampled grid.
    """
    if image.array.shape != label.array.shape:
        raise GVSLInputError(
            f"{label.path}: label shape {tuple(label.array.shape)} differs from image shape "
            f"{tuple(image.array.shape)} ({image.path.name})"
        )
    tol = atol_mm * max(image.spacing)
    diff = np.abs(image.affine - label.affine).max()
    if diff > tol:
        raise GVSLInputError(
            f"{label.path}: label affine differs from the image's ({image.path.name}) by {diff:.3g} mm"
        )


def check_label_values(label: Volume, allowed: Iterable[int]) -> np.ndarray:
    """Raise if ``label`` holds values outside ``allowed``; return the sorted values present."""
    present = np.unique(label.array)
    unexpected = np.setdiff1d(present, np.asarray(sorted(allowed)))
    if unexpected.size:
        shown = ", ".join(str(int(v)) for v in unexpected[:20]) + (", …" if unexpected.size > 20 else "")
        raise GVSLInputError(
            f"{label.path}: unexpected label values {shown} (expecting {sorted(int(v) for v in allowed)})"
        )
    return present


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` as NIfTI-1 with ``affine`` (sform and qform, scanner code) and no intensity scaling."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))
    return path
