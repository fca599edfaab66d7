"""phantom-ct: a synthetic contrast-enhanced chest CT cohort with a seven-structure heart.

Each subject is drawn from one seed. Anatomy is built from implicit shapes (oriented ellipsoids and
tubes along polylines) evaluated at every voxel centre, in world millimetres, RAS+ (array axis 0 runs
towards the patient's right, 1 towards anterior, 2 towards superior; the affine is ``diag(spacing)``):

* thorax: skin fat, a muscle wall, ribs, a vertebral column with its canal, two lungs with a faint
  parenchymal texture, the mediastinum and a descending aorta;
* heart, in a canonical frame that is rotated, scaled and shifted per subject: the left-ventricle
  cavity inside its myocardium (open at the base), a crescent right ventricle on the septum with an
  unlabelled thin wall, both atria, the ascending aorta rising from the LV base into the arch, and the
  pulmonary trunk rising from the RV outflow to its bifurcation; epicardial fat around it all;
* three coronary arteries (LAD, LCx, RCA) on the epicardial surface, 3.5 mm in radius (about one voxel across at the default 5 mm).

Labels follow MM-WHS 2017 (:data:`HEART_CLASSES`, values 1..7). The arch, the descending aorta, the
distal pulmonary branches and the RV wall are present but unlabelled, as in MM-WHS.

What makes the cohort a test of *geometric* similarity: every blood pool, the coronaries and the
unlabelled vessels share one contrast-enhanced intensity, and the LV myocardium shares its intensity
with the unlabelled RV wall. Telling LV from RV, the aorta from the pulmonary trunk or the ascending
from the descending aorta needs the spatial layout, which is the same in every subject up to the
per-subject pose, size, shape jitter and a smooth elastic deformation of the whole body. Per-subject
appearance varies too: contrast phase (blood 180–450 HU), tissue levels, blur and noise.

CCC analog: ``opacity=True`` adds 4–10 patchy ground-glass opacities (−600…−350 HU) to the lungs.
Look-alike confounders — posterior dependent density, small solid nodules — appear in every negative
and in half of the positives, so the class is not "anything dense in the lung".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gvsl.data.splines import upsample_lattice
from gvsl.errors import GVSLInputError

__all__ = ["HEART_CLASSES", "PhantomSubject", "generate_subject"]

#: MM-WHS 2017 class order: label values 205, 420, 500, 550, 600, 820, 850 become 1..7
HEART_CLASSES = ("myocardium", "left_atrium", "left_ventricle", "right_atrium", "right_ventricle",
                 "ascending_aorta", "pulmonary_artery")
MYO, LA, LV, RA, RV, AO, PA = range(1, 8)

AIR_HU = -1000.0
CORONARY_RADIUS_MM = 3.5


@dataclass(frozen=True)
class PhantomSubject:
    """One generated chest CT with its labels (arrays on the same grid, axes as in the module docstring)."""

    image_hu: np.ndarray  # float32, Hounsfield units
    heart: np.ndarray  # uint8, 0 = background, 1..7 = HEART_CLASSES
    coronary: np.ndarray  # uint8, 1 = coronary artery lumen
    opacity: bool  # ground-glass opacities present (the CCC target)
    spacing: tuple[float, float, float]
    heart_box: tuple[slice, slice, slice]
    lung_box: tuple[slice, slice, slice]


class _Points:
    """Voxel-centre coordinates in mm (three arrays of the volume's shape) in some frame."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x, self.y, self.z = x, y, z

    def transformed(self, rotation: np.ndarray, centre: Sequence[float], scale: float = 1.0) -> _Points:
        """Coordinates in a frame placed at ``centre`` with axes ``rotation`` (rows) and unit ``scale`` mm."""
        dx, dy, dz = self.x - centre[0], self.y - centre[1], self.z - centre[2]
        rows = [(r[0] * dx + r[1] * dy + r[2] * dz) / scale for r in rotation]
        return _Points(*rows)


def _ellipsoid(p: _Points, centre: Sequence[float], radii: Sequence[float],
               axes: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius: < 1 inside an ellipsoid with semi-axes ``radii`` along ``axes`` (rows)."""
    q = p.transformed(np.eye(3) if axes is None else axes, centre)
    return (q.x / radii[0]) ** 2 + (q.y / radii[1]) ** 2 + (q.z / radii[2]) ** 2


def _tube(p: _Points, path: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """Inside a tube of ``radius`` mm around the polyline ``path`` (round caps)."""
    path = np.asarray(path, np.float32)
    low, high = path.min(axis=0) - radius, path.max(axis=0) + radius
    # only points in the path's bounding box can be inside: most of the volume is skipped
    near = ((p.x >= low[0]) & (p.x <= high[0]) & (p.y >= low[1]) & (p.y <= high[1])
            & (p.z >= low[2]) & (p.z <= high[2]))
    px, py, pz = p.x[near], p.y[near], p.z[near]
    best = np.full(px.shape, np.inf, dtype=np.float32)
    for a, b in zip(path[:-1], path[1:]):
        ab = b - a
        ax, ay, az = px - a[0], py - a[1], pz - a[2]
        t = np.clip((ax * ab[0] + ay * ab[1] + az * ab[2]) / float(ab @ ab), 0.0, 1.0)
        d2 = (ax - t * ab[0]) ** 2 + (ay - t * ab[1]) ** 2 + (az - t * ab[2]) ** 2
        np.minimum(best, d2, out=best)
    inside = np.zeros(p.x.shape, dtype=bool)
    inside[near] = best <= radius ** 2
    return inside


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def _frame(long_axis: Sequence[float]) -> np.ndarray:
    """Orthonormal rows (long axis, then two perpendiculars) with the long axis first."""
    a = np.asarray(long_axis, float) / np.linalg.norm(long_axis)
    b = np.cross(a, (0.0, 0.0, 1.0))
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)])


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: Gaussian noise on a ``coarse``³ lattice, cubic-spline interpolated to ``shape``."""
    return upsample_lattice(rng.normal(0.0, amplitude, size=(coarse, coarse, coarse)), shape,
                            prefilter=True).astype(np.float32)


# ------------------------------------------------------------------------------------------- heart

# The canonical heart (mm, RAS+, origin at the LV cavity centre). The long axis runs from the base
# (right, posterior, superior) to the apex (left, anterior, inferior).
_HEART_AXES = _frame((-0.55, 0.5, -0.65))
_LONG, _ACROSS_A, _ACROSS_B = _HEART_AXES
_LV_RADII = np.array((36.0, 20.0, 20.0))
_MYO_MM = 9.0
_BASE_CUT = -0.7  # fraction of the LV long semi-axis where the base (valve plane) opens
# Where the arch meets the descending aorta, in the canonical heart frame (the thorax draws the rest).
_DESCENDING_TOP = np.array((-13.0, -75.0, 88.0))
_HEART_CENTRE = np.array((-15.0, 25.0, -10.0))  # nominal position in the thorax (mm)


@dataclass(frozen=True)
class _HeartShape:
    """Per-subject jitter of the canonical heart: radius factors and centre offsets (mm)."""

    lv: np.ndarray
    rv: np.ndarray
    la: np.ndarray
    ra: np.ndarray
    shift: dict[str, np.ndarray]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _HeartShape:
        factors = {k: rng.uniform(0.9, 1.1, size=3) for k in ("lv", "rv", "la", "ra")}
        shift = {k: rng.uniform(-3.0, 3.0, size=3) for k in ("rv", "la", "ra", "ao", "pa")}
        return cls(shift=shift, **factors)


@dataclass(frozen=True)
class _HeartMasks:
    label: np.ndarray  # uint8, HEART_CLASSES
    walls: np.ndarray  # unlabelled muscle: RV free wall, atrial walls
    envelope: np.ndarray  # epicardial fat around the heart
    coronary: np.ndarray
    unlabelled_blood: np.ndarray  # aortic arch, distal pulmonary branches


def _heart(p: _Points, shape: _HeartShape) -> _HeartMasks:
    """The heart's masks, with ``p`` in its canonical frame."""
    lv_radii = _LV_RADII * shape.lv
    base = p.transformed(_HEART_AXES, (0.0, 0.0, 0.0)).x  # signed distance along the long axis (mm)
    open_base = base >= _BASE_CUT * lv_radii[0]
    lv = (_ellipsoid(p, (0, 0, 0), lv_radii, _HEART_AXES) < 1) & open_base
    myo_outer = (_ellipsoid(p, (0, 0, 0), lv_radii + _MYO_MM, _HEART_AXES) < 1) & open_base

    # RV: a crescent against the septum, anterior and to the right of the LV
    rv_centre = 18.0 * _ACROSS_A + 20.0 * np.array((0.3, 0.9, 0.3)) + shape.shift["rv"]
    rv_radii = np.array((32.0, 26.0, 15.0)) * shape.rv
    rv_axes = _frame(_LONG)[[0, 2, 1]]
    rv = (_ellipsoid(p, rv_centre, rv_radii, rv_axes) < 1) & ~myo_outer & (base >= -30.0)
    rv_wall = (_ellipsoid(p, rv_centre, rv_radii + 4.0, rv_axes) < 1) & ~myo_outer & ~rv & (base >= -34.0)

    base_point = _LONG * (_BASE_CUT * lv_radii[0])
    la_centre = base_point + np.array((-2.0, -22.0, 10.0)) + shape.shift["la"]
    la_radii = np.array((26.0, 16.0, 18.0)) * shape.la
    la = (_ellipsoid(p, la_centre, la_radii) < 1) & ~myo_outer
    ra_centre = rv_centre + np.array((26.0, -20.0, 26.0)) + shape.shift["ra"]
    ra_radii = np.array((20.0, 20.0, 24.0)) * shape.ra
    ra = (_ellipsoid(p, ra_centre, ra_radii) < 1) & ~myo_outer & ~rv
    atrial_walls = ((_ellipsoid(p, la_centre, la_radii + 3.0) < 1) | (_ellipsoid(p, ra_centre, ra_radii + 3.0) < 1))

    # Aorta: root on the LV base, ascending (labelled) up to the arch, which turns posterior and left
    # into the descending aorta (unlabelled, drawn by the thorax).
    root = base_point + np.array((4.0, 4.0, 6.0)) + shape.shift["ao"]
    ascending_top = root + np.array((5.0, 5.0, 44.0))
    ascending = _tube(p, [base_point, root, ascending_top], 13.0)
    arch = _tube(p, [ascending_top, ascending_top + np.array((-12.0, -22.0, 16.0)), _DESCENDING_TOP], 12.0)
    # Pulmonary trunk: from the RV outflow, anterior and left of the aortic root, up to the bifurcation
    outflow = root + np.array((-10.0, 20.0, 6.0)) + shape.shift["pa"]
    bifurcation = root + np.array((-22.0, -10.0, 36.0))
    trunk = _tube(p, [outflow, root + np.array((-20.0, 12.0, 24.0)), bifurcation], 12.0)
    left_pa = _tube(p, [bifurcation, bifurcation + np.array((-40.0, -18.0, -2.0))], 9.0)
    right_pa = _tube(p, [bifurcation, bifurcation + np.array((30.0, -22.0, -6.0)),
                         bifurcation + np.array((62.0, -26.0, -10.0))], 9.0)
    proximal = _ellipsoid(p, bifurcation, (28.0, 28.0, 28.0)) < 1

    label = np.zeros(p.x.shape, np.uint8)
    # Later structures win where shapes overlap; the LV and its myocardium are never overwritten.
    label[trunk | ((right_pa | left_pa) & proximal)] = PA
    label[ra] = RA
    label[la] = LA
    label[rv] = RV
    label[ascending] = AO
    label[myo_outer] = MYO
    label[lv] = LV
    unlabelled_blood = (arch | ((right_pa | left_pa) & ~proximal)) & (label == 0)

    coronary = _coronaries(p, lv_radii, rv_centre, rv_radii, root) & (label == 0) & ~rv_wall
    envelope = ((_ellipsoid(p, (0, 0, 0), lv_radii + _MYO_MM + 8.0, _HEART_AXES) < 1)
                | (_ellipsoid(p, rv_centre, rv_radii + 8.0, rv_axes) < 1)
                | (_ellipsoid(p, la_centre, la_radii + 8.0) < 1) | (_ellipsoid(p, ra_centre, ra_radii + 8.0) < 1))
    return _HeartMasks(label=label, walls=(rv_wall | atrial_walls) & (label == 0), envelope=envelope,
                       coronary=coronary, unlabelled_blood=unlabelled_blood & ~coronary)


def _coronaries(p: _Points, lv_radii: np.ndarray, rv_centre: np.ndarray, rv_radii: np.ndarray,
                root: np.ndarray) -> np.ndarray:
    """LAD, LCx and RCA as tubes just outside the epicardium, starting at the aortic root."""
    outer = lv_radii + _MYO_MM
    lift = CORONARY_RADIUS_MM + 1.0

    def around(centre: np.ndarray, radii: np.ndarray, level: float, degrees: float) -> np.ndarray:
        # a point on the ellipsoid (semi-axes along LONG, ACROSS_A, ACROSS_B) at this long-axis level and
        # angle from ACROSS_A towards -ACROSS_B, lifted off the surface by ``lift``
        ring = np.sqrt(max(1.0 - (level / radii[0]) ** 2, 0.02))
        angle = np.deg2rad(degrees)
        return (centre + level * _LONG + np.cos(angle) * (ring * radii[1] + lift) * _ACROSS_A
                - np.sin(angle) * (ring * radii[2] + lift) * _ACROSS_B)

    lv_ring = np.array((outer[0], outer[1], outer[2]))
    # LAD: anterior interventricular groove, base to apex; LCx: left atrioventricular groove, anterior to
    # posterior; RCA: right atrioventricular groove around the RV's acute margin.
    lad = [root + np.array((-8.0, 8.0, -4.0))] + [around(np.zeros(3), lv_ring, level, 62.0)
                                                  for level in np.linspace(-24.0, outer[0] * 0.98, 9)]
    base_level = _BASE_CUT * lv_radii[0] + 5.0
    lcx = [lad[1]] + [around(np.zeros(3), lv_ring, base_level, d) for d in np.linspace(75.0, 215.0, 8)]
    rv_ring = np.array((rv_radii[0], rv_radii[2], rv_radii[1]))  # RV semi-axes along (LONG, ACROSS_A, ACROSS_B)
    rca = [root + np.array((10.0, 8.0, -2.0))] + [around(rv_centre, rv_ring, -22.0, d)
                                                  for d in np.linspace(40.0, -150.0, 9)]
    return (_tube(p, lad, CORONARY_RADIUS_MM) | _tube(p, lcx, CORONARY_RADIUS_MM)
            | _tube(p, rca, CORONARY_RADIUS_MM))


# ------------------------------------------------------------------------------------------ thorax


@dataclass(frozen=True)
class _Tissue:
    """Per-subject tissue levels (HU): the contrast phase sets ``blood``."""

    fat: float
    muscle: float
    lung: float
    blood: float
    myocardium: float
    bone: float
    marrow: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Tissue:
        return cls(fat=rng.uniform(-115, -80), muscle=rng.uniform(30, 60), lung=rng.uniform(-880, -820),
                   blood=rng.uniform(180, 450), myocardium=rng.uniform(70, 130), bone=rng.uniform(600, 900),
                   marrow=rng.uniform(180, 300))


def _validate(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    try:
        shape = tuple(int(s) for s in shape)
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as error:
        raise GVSLInputError(f"phantom-ct: shape and spacing must be numbers ({error})") from None
    if len(shape) != 3 or min(shape) < 8:
        raise GVSLInputError(f"phantom-ct: shape must be three sizes of at least 8 voxels, got {shape}")
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise GVSLInputError(f"phantom-ct: spacing must be three positive numbers (mm), got {spacing}")
    return shape, spacing


def generate_subject(seed: int, shape: Sequence[int] = (64, 64, 64), spacing: Sequence[float] = (5.0, 5.0, 5.0),
                     opacity: bool | None = None) -> PhantomSubject:
    """Generate one subject.

    Args:
        seed: the subject's seed; the same seed always gives the same arrays.
        shape: voxels along (right, anterior, superior); the field of view is ``shape * spacing`` mm,
            centred on the thorax (the default 64³ at 5 mm is 320 mm, a chest CT's field of view).
        spacing: voxel size in mm.
        opacity: ``True`` / ``False`` adds / withholds ground-glass opacities and confounders (CCC);
            ``None`` (other tasks) withholds opacities but keeps occasional confounders.
    """
    shape, spacing = _validate(shape, spacing)
    rng = np.random.default_rng(seed)
    tissue = _Tissue.draw(rng)
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    # One smooth elastic deformation of the whole body (a backward map: where each voxel samples anatomy).
    coarse = 5
    strength = rng.uniform(2.0, 5.0)
    p = _Points(x + _smooth_field(rng, shape, coarse, strength), y + _smooth_field(rng, shape, coarse, strength),
                z + _smooth_field(rng, shape, coarse, strength))

    body_scale = rng.uniform(0.9, 1.1, size=2)
    body_radii = np.array((140.0 * body_scale[0], 95.0 * body_scale[1]))
    fat_mm, muscle_mm = rng.uniform(6.0, 18.0), rng.uniform(8.0, 14.0)
    ellipse = lambda grow: (p.x / (body_radii[0] + grow)) ** 2 + (p.y / (body_radii[1] + grow)) ** 2  # noqa: E731
    body = ellipse(0.0) < 1
    inside_muscle = ellipse(-fat_mm) < 1
    cavity = ellipse(-fat_mm - muscle_mm) < 1

    image = np.full(shape, AIR_HU, np.float32)
    image[body] = tissue.fat
    image[inside_muscle] = tissue.muscle
    image[cavity] = tissue.fat  # mediastinal fat, replaced by organs below

    # Ribs: a thin shell under the muscle, interrupted along z with a slant that follows the angle
    angle = np.arctan2(p.y, p.x)
    shell = (ellipse(-fat_mm - muscle_mm + 3.0) < 1) & ~(ellipse(-fat_mm - muscle_mm - 5.0) < 1)
    ribs = shell & (np.sin(2 * np.pi * (p.z + 18.0 * np.abs(angle)) / 26.0) > 0.45) & (np.abs(p.x) > 25.0)
    image[ribs] = tissue.bone

    lung_tilt = rng.uniform(-6.0, 6.0)
    right_lung = _ellipsoid(p, (72.0, -8.0, 15.0 + lung_tilt), (58.0 * body_scale[0], 72.0 * body_scale[1], 120.0)) < 1
    left_lung = _ellipsoid(p, (-72.0, -8.0, 15.0 - lung_tilt), (55.0 * body_scale[0], 72.0 * body_scale[1], 120.0)) < 1
    lungs = (right_lung | left_lung) & (ellipse(-fat_mm - muscle_mm - 6.0) < 1)

    # Vertebral column and descending aorta (left-posterior of the vertebral body)
    vertebra = ((p.x / 20.0) ** 2 + ((p.y + 62.0) / 17.0) ** 2) < 1
    cortex = vertebra & ~(((p.x / 16.0) ** 2 + ((p.y + 62.0) / 13.0) ** 2) < 1)
    canal = ((p.x / 8.0) ** 2 + ((p.y + 86.0) / 7.0) ** 2) < 1
    spinous = (np.abs(p.x) < 5.0) & (p.y < -92.0) & (p.y > -115.0)
    # The heart: canonical frame placed per subject
    heart_centre = _HEART_CENTRE + rng.uniform(-8.0, 8.0, size=3)
    heart_rotation = _rotation(*rng.uniform(-0.2, 0.2, size=3))
    heart_scale = rng.uniform(0.9, 1.08)
    q = p.transformed(heart_rotation.T, heart_centre, heart_scale)
    masks = _heart(q, _HeartShape.draw(rng))
    heart = masks.label
    # the descending aorta runs down from where the subject's arch ends
    arch_end = heart_centre + heart_scale * heart_rotation @ _DESCENDING_TOP
    descending = (((p.x - arch_end[0]) ** 2 + (p.y - arch_end[1]) ** 2) < 12.0 ** 2) & (p.z <= arch_end[2])

    lungs &= ~masks.envelope & ~vertebra & ~descending & ~(np.abs(p.x) < 22.0)
    image[lungs] = (tissue.lung + _smooth_field(rng, shape, max(shape) // 4, 25.0))[lungs]
    image[masks.envelope] = tissue.fat
    image[masks.walls] = tissue.myocardium
    image[vertebra] = tissue.marrow
    image[cortex | spinous] = tissue.bone
    image[canal] = 15.0
    image[descending | masks.unlabelled_blood] = tissue.blood
    image[heart > 0] = tissue.blood
    image[heart == MYO] = tissue.myocardium
    coronary = masks.coronary
    image[coronary] = tissue.blood

    has_opacity = bool(opacity)
    confounders = (opacity is False) or (rng.random() < (0.5 if opacity else 0.3))
    if has_opacity:
        _add_opacities(image, lungs, p, rng)
    if confounders:
        _add_confounders(image, lungs, p, rng)

    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.4, 0.8), mode="nearest")
    image += rng.normal(0.0, rng.uniform(10.0, 30.0), size=shape).astype(np.float32)

    return PhantomSubject(image_hu=image.astype(np.float32), heart=heart, coronary=coronary.astype(np.uint8),
                          opacity=has_opacity, spacing=spacing, heart_box=_box(heart > 0), lung_box=_box(lungs))


def _add_opacities(image: np.ndarray, lungs: np.ndarray, p: _Points, rng: np.random.Generator) -> None:
    """Patchy ground-glass: a few lobulated soft blobs inside the lungs, mostly peripheral."""
    weight = np.zeros(image.shape, np.float32)
    candidates = np.argwhere(lungs & (np.abs(p.x) > 55.0))
    if len(candidates) == 0:
        candidates = np.argwhere(lungs)
    for index in rng.choice(len(candidates), size=rng.integers(4, 11)):
        centre = candidates[index]
        c = (p.x[tuple(centre)], p.y[tuple(centre)], p.z[tuple(centre)])
        sigma = rng.uniform(15.0, 30.0)
        d2 = (p.x - c[0]) ** 2 + (p.y - c[1]) ** 2 + (p.z - c[2]) ** 2
        np.maximum(weight, np.exp(-d2 / (2 * sigma ** 2)), out=weight)
    lobules = np.clip(1.0 + _smooth_field(rng, image.shape, max(image.shape) // 6, 0.4), 0.3, 1.5)
    weight = np.clip(weight * lobules, 0.0, 1.0) * lungs
    target = rng.uniform(-600.0, -350.0)
    image += weight * (target - image)


def _add_confounders(image: np.ndarray, lungs: np.ndarray, p: _Points, rng: np.random.Generator) -> None:
    """Look-alikes of opacity: posterior dependent density and one or two small solid nodules."""
    if rng.random() < 0.7:
        posterior = np.clip((-p.y - 45.0) / 30.0, 0.0, 1.0) * lungs
        image += posterior * rng.uniform(100.0, 220.0)
    candidates = np.argwhere(lungs)
    if len(candidates):
        for index in rng.choice(len(candidates), size=rng.integers(1, 3)):
            centre = candidates[index]
            c = (p.x[tuple(centre)], p.y[tuple(centre)], p.z[tuple(centre)])
            nodule = ((p.x - c[0]) ** 2 + (p.y - c[1]) ** 2 + (p.z - c[2]) ** 2) < rng.uniform(3.0, 6.0) ** 2
            image[nodule & lungs] = rng.uniform(-60.0, 40.0)


def _box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found:
        return (slice(0, 0),) * 3
    return found[0]
