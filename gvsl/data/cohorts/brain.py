"""mni-brain: a synthetic T1-weighted brain MR cohort with seven tissue × region labels (CANDI analog).

Everything comes from the MNI152 (ICBM 2009a symmetric) files that nilearn ships inside its package,
so nothing is downloaded: the T1 template, its grey- and white-matter probability maps and its brain
mask, all loaded at nilearn's 2 mm resolution (``resolution=2``).

**Every subject derives from that one template.** There is no second real brain behind the cohort:
the anatomical variability between subjects is only what the random deformation below adds (up to 10°,
up to 15 % of size per axis, up to 7 mm of smooth warping, ±10 mm of position), not the variability of
a real population (sulcal patterns, ventricle size, atrophy).

Labels, made once on the template grid (:data:`BRAIN_CLASSES`, values 1..7, 0 = background): first a
tissue per voxel,

* inside the brain mask, each voxel takes the largest of three probabilities: grey matter, white
  matter, and the remainder ``1 - p_gm - p_wm``; a voxel where the remainder wins is CSF. The
  remainder acts as the background threshold, so a voxel counts as GM or WM only when that tissue is
  more likely than either the other tissue or neither. CSF is then the ventricles and the sulcal and
  cisternal fluid the template resolves inside its mask; it is dark on the T1 (template intensity
  0.25–0.50 against 0.52–0.75 for GM and 0.77–0.90 for WM, 5th–95th percentiles).
* then tissue × region (:func:`_regions`), so that intensity separates three groups and only the layout
  the classes inside each: CSF inside a central MNI box (:data:`VENTRICLE_BOX_MM`: lateral and third
  ventricles) is ``ventricles``, the rest ``external_csf`` (sulcal, cisternal); GM and WM below the
  tentorium (z < −16 mm behind y = −38 mm) are ``cerebellum``; the rest of GM and WM split into left and
  right hemispheres at the template's midline x = 0. Every class keeps at least ~40 voxels at the
  default profile's 6 mm grid (the ventricles are the smallest, ~1.5 % of the brain).
* the labels stop at z = −64 mm (MNI), the lowest slice of the cerebellum. The template's own field
  of view already cuts the medulla at z = −72 mm; dropping that 8 mm stub from the labels keeps the
  labelled brain (146 × 180 × 148 mm) inside the default field of view with room for the random zoom.
  The image keeps the medulla, as a real scan shows the brainstem running on out of the field of view.

Per subject, from ``np.random.default_rng(seed)``:

1. geometry: a rotation of up to ±10° about each axis and a zoom of 0.85–1.0 along each axis, both
   about the brain's centre, a shift of the brain in the field of view of up to ±10 mm per axis, plus a
   smooth elastic warp: cubic B-splines on a ~32 mm lattice, squashed by ``tanh`` so each displacement
   component stays below 7 mm. The zooms centre on 0.925 because the MNI152 average is larger than a
   typical individual brain (180 mm front to back against about 165–170 mm) and CANDI's subjects are
   children and adolescents; the default 192 × 228 × 204 mm field of view holds the labelled brain in
   every pose with one empty voxel kept on every side (seeds 0–199 checked at 6 mm). This is one
   backward map from the output grid into the template, sampled with ``scipy.ndimage.map_coordinates``:
   nearest neighbour for the labels, linear for the image;
2. contrast: the T1 intensity is split into what each tissue carries (``T1 · p_tissue``), each part
   scaled by its own factor (CSF ±15 %, GM and WM ±5 %), then a gamma of 0.8–1.25; the jitter is small
   enough to keep the T1 order WM > GM > CSF, which every real T1 has. The factors are per tissue, not
   per class: left and right, ventricles and external CSF share their intensity distribution;
3. a smooth multiplicative bias field (cubic B-splines on a 3-point-per-axis lattice: no more than a
   gradient with one bend per axis) reaching ±15–25 %;
4. Rician noise (σ 1–4 % of the template's maximum), the magnitude of a complex signal, so the
   background is Rayleigh-distributed like a real magnitude image;
5. min-max to [0, 1].

Grid and orientation: array axes (D, H, W) = (x, y, z) of RAS+ MNI space, i.e. axis 0 runs from the
patient's left to right, axis 1 from posterior to anterior, axis 2 from inferior to superior. The
affine is ``diag(spacing)`` with an origin that puts the grid's centre on the centre of the labelled
brain's bounding box, so world coordinates are MNI millimetres (up to the subject's deformation and
shift). The default 48 × 57 × 51 voxels at 4 mm (192 × 228 × 204 mm) hold the whole labelled brain;
other shapes or spacings are centred the same way and may cut it. Whatever the spacing, the
anatomy comes from the 2 mm template, so finer grids gain smoothness, not detail.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gvsl.data.cohorts.splines import upsample_lattice
from gvsl.errors import GVSLInputError

__all__ = ["BRAIN_CLASSES", "BrainSubject", "generate_subject"]

#: class names of label values 1..7 (0 = background): tissue × region, so that intensity alone separates
#: three groups (CSF, GM, WM) and only the layout tells the classes inside a group apart
BRAIN_CLASSES: tuple[str, ...] = (
    "ventricles",
    "external_csf",
    "left_grey_matter",
    "right_grey_matter",
    "left_white_matter",
    "right_white_matter",
    "cerebellum",
)
VENTRICLES, EXTERNAL_CSF, LEFT_GM, RIGHT_GM, LEFT_WM, RIGHT_WM, CEREBELLUM = range(1, 8)
#: the tissue (0 = CSF, 1 = GM, 2 = WM, 3 = GM or WM) each class is made of
CLASS_TISSUE = {VENTRICLES: 0, EXTERNAL_CSF: 0, LEFT_GM: 1, RIGHT_GM: 1, LEFT_WM: 2, RIGHT_WM: 2, CEREBELLUM: 3}

TEMPLATE_RESOLUTION_MM = 2
LOWEST_LABEL_Z_MM = -64.0
#: MNI box (mm) of the central CSF that counts as ventricles: lateral and third ventricles
VENTRICLE_BOX_MM = ((-28.0, 28.0), (-48.0, 30.0), (-6.0, 36.0))
#: the cerebellum: GM or WM below the tentorium, approximated as z < -16 mm behind y = -38 mm (MNI)
CEREBELLUM_BELOW_Z_MM = -16.0
CEREBELLUM_BEHIND_Y_MM = -38.0
MAX_ROTATION_DEG = 10.0
ZOOM_RANGE = (0.85, 1.0)
SHIFT_MM = 10.0  # bound of the brain's position in the field of view, per axis
ELASTIC_MM = 7.0  # bound of each displacement component
ELASTIC_GAIN = 3.0  # B-spline fields average their coefficients down; this restores a few-mm warp
ELASTIC_LATTICE_MM = 32.0
BIAS_RANGE = (0.15, 0.25)
BIAS_LATTICE_POINTS = 3
GAMMA_RANGE = (0.8, 1.25)
TISSUE_JITTER = (0.15, 0.05, 0.05)  # CSF, GM, WM: ± relative intensity
NOISE_RANGE = (0.01, 0.04)


@dataclass(frozen=True)
class BrainSubject:
    """One generated T1 brain MR with its tissue labels, on the grid described in the module docstring."""

    image: np.ndarray  # float32, values in [0, 1]
    label: np.ndarray  # uint8, 0 = background, 1..3 = BRAIN_CLASSES
    spacing: tuple[float, float, float]
    affine: np.ndarray  # 4x4 float64, voxel -> world (MNI mm)


@dataclass(frozen=True)
class _Template:
    tissue: np.ndarray  # (3, X, Y, Z) float32: the T1 intensity carried by CSF, GM, WM; they sum to the T1
    label: np.ndarray  # (X, Y, Z) uint8
    world_to_index: np.ndarray  # 4x4
    centre_mm: np.ndarray  # centre of the labelled brain's bounding box


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    # Imported on use: nilearn pulls in scikit-learn, seconds of import that only this generator needs.
    from nilearn import datasets

    images = [
        load(resolution=TEMPLATE_RESOLUTION_MM)
        for load in (
            datasets.load_mni152_template,
            datasets.load_mni152_gm_template,
            datasets.load_mni152_wm_template,
            datasets.load_mni152_brain_mask,
        )
    ]
    affine = np.asarray(images[0].affine, dtype=np.float64)
    if any(img.shape != images[0].shape or not np.allclose(img.affine, affine) for img in images):
        raise RuntimeError("nilearn's MNI152 template, tissue maps and mask are not on one grid")
    t1, gm, wm = (np.clip(img.get_fdata(dtype=np.float32), 0.0, None) for img in images[:3])
    mask = images[3].get_fdata(dtype=np.float32) > 0
    probabilities = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm])
    tissue_label = np.argmax(probabilities, axis=0)  # 0 CSF, 1 GM, 2 WM
    index = np.indices(t1.shape, dtype=np.float64)
    x, y, z = (np.tensordot(affine[axis, :3], index, axes=1) + affine[axis, 3] for axis in range(3))
    label = _regions(tissue_label, x, y, z)
    label[~mask | (z < LOWEST_LABEL_Z_MM)] = 0
    box = ndimage.find_objects((label > 0).astype(np.uint8))[0]
    corners = np.array([[s.start for s in box], [s.stop - 1 for s in box]], dtype=np.float64)
    centre_mm = (corners @ affine[:3, :3].T + affine[:3, 3]).mean(axis=0)
    # Normalised by the T1's peak so the gamma below acts on [0, 1].
    tissue = (probabilities / probabilities.sum(axis=0).clip(1e-6) * t1 / t1.max()).astype(np.float32)
    return _Template(tissue=tissue, label=label, world_to_index=np.linalg.inv(affine), centre_mm=centre_mm)


def _regions(tissue: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Class ids (:data:`BRAIN_CLASSES`) from the tissue (0 CSF, 1 GM, 2 WM) and MNI position (mm).

    CSF inside :data:`VENTRICLE_BOX_MM` is ventricles, the rest external (sulcal and cisternal) CSF;
    GM and WM below the tentorium are cerebellum, above it they split into hemispheres at x = 0.
    """
    (x0, x1), (y0, y1), (z0, z1) = VENTRICLE_BOX_MM
    central = (x > x0) & (x < x1) & (y > y0) & (y < y1) & (z > z0) & (z < z1)
    cerebellum = (z < CEREBELLUM_BELOW_Z_MM) & (y < CEREBELLUM_BEHIND_Y_MM)
    left = x < 0
    label = np.select(
        [(tissue == 0) & central, tissue == 0, cerebellum, (tissue == 1) & left, tissue == 1, left, np.ones_like(left)],
        [VENTRICLES, EXTERNAL_CSF, CEREBELLUM, LEFT_GM, RIGHT_GM, LEFT_WM, RIGHT_WM],
    )
    return label.astype(np.uint8)


def _smooth_fields(rng: np.random.Generator, count: int, lattice: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``count`` smooth fields of ``shape``: cubic B-splines over a ``lattice`` of uniform [−1, 1] coefficients.

    Bounded coefficients and a convex basis bound the fields to [−1, 1], so a displacement never
    exceeds its scale and the brain stays inside the field of view.
    """
    return upsample_lattice(rng.uniform(-1.0, 1.0, size=(count, *lattice)), shape, prefilter=False)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


_Grid = tuple[tuple[int, int, int], tuple[float, float, float]]


def _validate(shape: Sequence[int], spacing: Sequence[float]) -> _Grid:
    try:
        shape, spacing = tuple(shape), tuple(spacing)
    except TypeError:
        raise GVSLInputError(
            f"mni-brain: shape and spacing must be sequences of three numbers, got {shape!r} and {spacing!r}"
        ) from None
    if len(shape) != 3 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise GVSLInputError(f"mni-brain: shape must be three positive integers (voxels), got {shape!r}")
    if np.prod(shape) < 2:
        raise GVSLInputError(f"mni-brain: shape {shape!r} is one voxel, which has no intensity range to min-max")
    if len(spacing) != 3 or not all(
        isinstance(s, numbers.Real) and not isinstance(s, bool) and np.isfinite(s) and s > 0 for s in spacing
    ):
        raise GVSLInputError(f"mni-brain: spacing must be three positive numbers (mm), got {spacing!r}")
    return tuple(int(n) for n in shape), tuple(float(s) for s in spacing)


def generate_subject(
    seed: int, shape: Sequence[int] = (48, 57, 51), spacing: Sequence[float] = (4.0, 4.0, 4.0)
) -> BrainSubject:
    """Generate one subject.

    Args:
        seed: the subject's seed; the same seed always gives the same arrays.
        shape: voxels along (x: left→right, y: posterior→anterior, z: inferior→superior), centred on
            the brain; the default 48 × 57 × 51 at 4 mm (192 × 228 × 204 mm) holds the whole labelled brain.
        spacing: voxel size in mm.

    Raises:
        GVSLInputError: ``shape`` is not three positive integers or ``spacing`` not three positive numbers.
    """
    shape, spacing = _validate(shape, spacing)
    template = _template()
    rng = np.random.default_rng(seed)

    # A backward map (output voxel -> template position) gives every output voxel exactly one sample.
    rotation = _rotation(np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)))
    zoom = rng.uniform(*ZOOM_RANGE, 3)
    shift = rng.uniform(-SHIFT_MM, SHIFT_MM, 3)
    extent = np.array(shape) * np.array(spacing)
    lattice = tuple(int(np.ceil(e / ELASTIC_LATTICE_MM)) + 1 for e in extent)
    # Strong B-spline coefficients squashed by tanh: displacements of a few mm that never exceed ELASTIC_MM.
    displacement = ELASTIC_MM * np.tanh(ELASTIC_GAIN * _smooth_fields(rng, 3, lattice, shape)).reshape(3, -1)
    offsets = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    points = np.stack(np.meshgrid(*offsets, indexing="ij")).reshape(3, -1)
    # rotation / zoom = R · diag(1 / zoom): sampling the template at shrunk offsets enlarges the subject by zoom.
    # the brain sits ``shift`` mm off the grid's centre: the grid samples the template ``shift`` away
    source = template.centre_mm[:, None] + (rotation / zoom) @ (points - shift[:, None]) + displacement
    coords = template.world_to_index[:3, :3] @ source + template.world_to_index[:3, 3:]
    label = ndimage.map_coordinates(template.label, coords, order=0, mode="constant", cval=0).reshape(shape)
    tissue = np.stack(
        [ndimage.map_coordinates(t, coords, order=1, mode="constant", cval=0.0) for t in template.tissue]
    ).reshape(3, *shape)

    bias_amplitude = rng.uniform(*BIAS_RANGE)
    bias = _smooth_fields(rng, 1, (BIAS_LATTICE_POINTS,) * 3, shape)[0]
    bias = 1.0 + bias_amplitude * bias / np.abs(bias).max()
    gamma = rng.uniform(*GAMMA_RANGE)
    jitter = 1.0 + rng.uniform(-1.0, 1.0, 3) * np.array(TISSUE_JITTER)
    signal = np.tensordot(jitter, tissue, axes=1) ** gamma * bias
    sigma = rng.uniform(*NOISE_RANGE)
    real, imaginary = sigma * rng.standard_normal((2, *shape))
    magnitude = np.hypot(signal + real, imaginary)
    image = (magnitude - magnitude.min()) / (magnitude.max() - magnitude.min())

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = template.centre_mm - (np.array(shape) - 1) / 2.0 * np.array(spacing)
    return BrainSubject(image=image.astype(np.float32), label=label.astype(np.uint8), spacing=spacing, affine=affine)
