"""The paper's preprocessing: canonical orientation, resampling, intensity windows and ROI crops.

Orientation: every volume is first reoriented to the closest **RAS+** axis order with nibabel's
``as_closest_canonical`` (array axis 0 runs left→right, 1 posterior→anterior, 2 inferior→superior),
so axis 2 is the axial (slice) axis in every prepared file. Resampling then keeps the world
position of every structure: the output grid shares the input's axis directions and field-of-view
centre, and each output voxel is interpolated at its exact world position (trilinear for images,
nearest for labels). Crops and pads update the affine, so prepared files stay in world coordinates.

Windows (paper Sec. 4.1: "clipped to [0, 2048] and divided by 2048"): ``clip(raw + offset, 0, 2048)
/ 2048``. The authors' pre-training loader uses offset 0 on their (already shifted) private data and
their downstream loaders add 1024 to Hounsfield units; the kit's default for HU input is 1024, so
the window covers [-1024, 1024] HU. MR images are min-max normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from gvsl.errors import GVSLInputError

__all__ = [
    "CT_WINDOW_WIDTH",
    "DEFAULT_HU_OFFSET",
    "ROI",
    "centred_roi",
    "crop_or_pad",
    "ct_window",
    "foreground_box",
    "lung_mask",
    "minmax",
    "resample",
    "roi_shape",
    "to_canonical",
]

CT_WINDOW_WIDTH = 2048.0
#: raw + 1024 maps -1024 HU (air) to 0, as in the authors' downstream loaders
DEFAULT_HU_OFFSET = 1024.0

#: (start, shape) of a fixed-size crop in voxels; ``start`` may be negative or run past the end (padding)
ROI = tuple[tuple[int, int, int], tuple[int, int, int]]


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip the axes to the closest RAS+ orientation (nibabel ``as_closest_canonical``)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def resample(
    array: np.ndarray, affine: np.ndarray, spacing: Sequence[float], *, label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Resample to ``spacing`` mm, keeping the axis directions and the field-of-view centre.

    Args:
        array: (I, J, K) volume.
        affine: its (4, 4) voxel -> world affine.
        spacing: target voxel size (mm) along the three array axes.
        label: nearest-neighbour interpolation (labels) instead of trilinear (images).

    Returns:
        The resampled array (same dtype for labels, float32 for images) and its affine. Voxel
        ``p`` of the output samples the input at world point ``affine_out @ p``; points up to half
        an input voxel outside the input's extent take the edge value.
    """
    spacing_in = np.linalg.norm(affine[:3, :3], axis=0)
    spacing_out = np.asarray(spacing, dtype=float)
    if spacing_out.shape != (3,) or (spacing_out <= 0).any():
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    shape_in = np.asarray(array.shape, dtype=float)
    if np.allclose(spacing_in, spacing_out, rtol=1e-6, atol=0):
        return (array if label else array.astype(np.float32, copy=False)), affine.copy()
    shape_out = np.maximum(np.round(shape_in * spacing_in / spacing_out), 1).astype(int)
    directions = affine[:3, :3] / spacing_in
    out_affine = np.eye(4)
    out_affine[:3, :3] = directions * spacing_out
    centre_world = affine[:3, :3] @ ((shape_in - 1) / 2) + affine[:3, 3]
    out_affine[:3, 3] = centre_world - out_affine[:3, :3] @ ((shape_out - 1) / 2)
    # output voxel -> input voxel
    to_input = np.linalg.inv(affine) @ out_affine
    source = array if label else array.astype(np.float32, copy=False)
    out = ndimage.affine_transform(
        source,
        to_input[:3, :3],
        offset=to_input[:3, 3],
        output_shape=tuple(shape_out),
        order=0 if label else 1,
        mode="nearest",
        prefilter=False,
    )
    return out, out_affine


def ct_window(hu: np.ndarray, offset: float = DEFAULT_HU_OFFSET) -> np.ndarray:
    """``clip(hu + offset, 0, 2048) / 2048`` as float32 in [0, 1] (see the module docstring for ``offset``)."""
    return (
        np.clip(np.asarray(hu, dtype=np.float32) + np.float32(offset), 0.0, CT_WINDOW_WIDTH)
        / np.float32(CT_WINDOW_WIDTH)
    ).astype(np.float32)


def minmax(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Scale to [0, 1] by the volume's own minimum and maximum (MR); a constant volume is an error."""
    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        raise GVSLInputError(f"{name}: constant intensity {low}, cannot min-max normalise")
    return ((image - low) / (high - low)).astype(np.float32)


def roi_shape(roi_mm: Sequence[float], spacing: Sequence[float]) -> tuple[int, int, int]:
    """Voxel shape of a ``roi_mm`` box at ``spacing`` (rounded, at least one voxel)."""
    return tuple(max(1, int(round(m / s))) for m, s in zip(roi_mm, spacing))


def foreground_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the nonzero voxels as slices, or None when there are none."""
    objects = ndimage.find_objects(np.asarray(mask != 0, dtype=np.uint8))
    return objects[0] if objects else None


def centred_roi(
    box: tuple[slice, slice, slice], shape: Sequence[int], *, margin: int = 0, name: str = "volume", strict: bool = True
) -> ROI:
    """A ``shape``-sized crop centred on ``box``.

    Args:
        box: bounding box (slices) of the structure of interest.
        shape: crop size in voxels.
        margin: voxels the box must keep on each side inside the crop.
        name: the case, for the error message.
        strict: require the box plus margin to fit the crop. Used for labelled structures, where
            cutting would silently change the ground truth; the lung and brain-centre crops are
            fixed-size views (the paper's protocol) and are not strict.

    Raises:
        GVSLInputError: ``strict`` and the box plus margin is larger than the crop.
    """
    extent = [b.stop - b.start + 2 * margin for b in box]
    if strict and any(e > s for e, s in zip(extent, shape)):
        raise GVSLInputError(
            f"{name}: region of interest {tuple(extent)} voxels (with a {margin}-voxel margin) "
            f"does not fit the fixed crop {tuple(shape)}; pass a larger ROI"
        )
    # Integer centre of the box, minus the crop's half-size (same rounding for odd and even sizes).
    start = tuple(int((b.start + b.stop) // 2 - s // 2) for b, s in zip(box, shape))
    return start, tuple(int(s) for s in shape)


def crop_or_pad(array: np.ndarray, affine: np.ndarray, roi: ROI, *, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``roi`` out of ``array``, padding with ``fill`` where it leaves the volume; shift the affine.

    Returns:
        The (roi shape) array and the affine whose voxel (0, 0, 0) is input voxel ``start``.
    """
    start, shape = roi
    out = np.full(shape, fill, dtype=array.dtype)
    src = tuple(slice(max(b, 0), min(b + s, n)) for b, s, n in zip(start, shape, array.shape))
    dst = tuple(slice(sl.start - b, sl.stop - b) for sl, b in zip(src, start))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = array[src]
    shift = np.eye(4)
    shift[:3, 3] = start
    return out, affine @ shift


def lung_mask(hu: np.ndarray, *, axial_axis: int = 2, air_hu: float = -400.0) -> np.ndarray:
    """Lungs of a chest CT (HU), by thresholding the air enclosed by the body.

    The body is the largest connected component above ``air_hu``; its holes are filled slice by
    slice along ``axial_axis`` (per slice, because in 3-D the trachea connects the lungs to the air
    outside the scan). Lungs are the filled body's air voxels, kept as the connected components of
    at least 10 % of the largest one (two lungs, or one when they touch).

    Returns:
        Boolean mask, all False when no enclosed air is found.
    """
    body_candidates = hu > air_hu
    labels, count = ndimage.label(body_candidates)
    if count == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = ndimage.sum_labels(body_candidates, labels, index=np.arange(1, count + 1))
    body = labels == (int(np.argmax(sizes)) + 1)
    filled = np.empty_like(body)
    for index in range(body.shape[axial_axis]):
        slicer = [slice(None)] * 3
        slicer[axial_axis] = index
        filled[tuple(slicer)] = ndimage.binary_fill_holes(body[tuple(slicer)])
    enclosed_air = filled & ~body
    enclosed_air = ndimage.binary_opening(enclosed_air, iterations=1)
    labels, count = ndimage.label(enclosed_air)
    if count == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = ndimage.sum_labels(enclosed_air, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    return np.isin(labels, keep)
