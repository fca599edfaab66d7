"""phantom-ct: a synthetic contrast-enhanced chest CT cohort with a seven-structure heart.

Each subject is drawn from one seed. Anatomy is built from implicit shapes (:mod:`gvsl.data.cohorts.shapes`:
oriented ellipsoids and tubes along polylines) evaluated at every voxel centre, in world millimetres,
RAS+ (array axis 0 runs towards the patient's right, 1 towards anterior, 2 towards superior; the
affine is ``diag(spacing)``):

* thorax: skin fat, a muscle wall, ribs, a vertebral column with its canal, two lungs with a faint
  parenchymal texture, the mediastinum and a descending aorta;
* heart, in a canonical frame that is rotated, scaled and shifted per subject: the left-ventricle
  cavity inside its myocardium (open at the base), a crescent right ventricle on the septum with an
  unlabelled thin wall, both atria, the ascending aorta rising from the LV base into the arch, and the
  pulmonary trunk rising from the RV outflow to its bifurcation; epicardial fat around it all;
* three coronary arteries (LAD, LCx, RCA) on the epicardial surface, 3.5 mm in radius (about one voxel
  across at the default 5 mm).

Labels follow MM-WHS 2017 (:data:`HEART_CLASSES`, values 1..7). The arch, the descending aorta, the
distal pulmonary branches and the RV wall are present but unlabelled, as in MM-WHS.

Subjects differ as patients do:

* **whole-body pose** (:class:`BodyPose`): one similarity transform of the sampling grid per subject, so
  the heart, lungs, spine and chest wall move together: a rotation of ±15° about the long axis and ±5°
  about the other two, a size factor of 0.88–1.12 (with the trunk's own 0.9–1.1 per in-plane axis: about
  ±20 % in all), and a position in the field of view of ±20 mm left-right, ±15 mm front-back and ±12 mm
  along the table (the scan range is planned on the scout, so it varies least). A smooth elastic
  deformation of the whole body follows;
* **the heart's own pose and shape** (:class:`~gvsl.data.cohorts.phantom_heart.HeartShape`): ±8 mm, ±0.2 rad and
  0.9–1.08 on top of the body's pose; each of LV, RV, LA, RA, aorta and pulmonary trunk scaled on its own
  (0.82–1.18), and the LV long axis tilted up to 14°;
* **contrast timing**: a per-subject phase between early arterial and venous. Arterial blood (LA, LV,
  aorta, coronaries) peaks first; the right heart and pulmonary arteries reach 50 % of the peak early
  and 110 % late, while the left heart falls to 60 %. So the LV is brighter than the RV in some subjects
  and darker in others: intensity cannot name a chamber across subjects, only the layout can. Blood stays
  brighter than the myocardium (which shares its intensity with the unlabelled RV wall), and telling
  the ascending from the descending aorta or either ventricle from the other still needs the layout;
* tissue levels, blur and noise.

The field of view holds the heart and the coronaries in every pose at the default 320 mm (64³ at 5 mm)
and at SAC's 240 mm, and both lungs whole at 320 mm (seeds 0-199 checked by the tests). Downstream
regions of interest are placed without labels (:mod:`gvsl.data.sources.generated`).

CCC analog: ``opacity=True`` adds 4–10 patchy ground-glass opacities (−600…−350 HU) to the lungs.
Look-alike confounders — posterior dependent density, small solid nodules — appear in every negative
and in half of the positives, so the class is not "anything dense in the lung".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gvsl.data.cohorts.phantom_heart import (
    AO,
    DESCENDING_TOP,
    HEART_CENTRE,
    HEART_CLASSES,
    LA,
    LV,
    MYO,
    PA,
    RA,
    RV,
    HeartMasks,
    HeartShape,
    canonical_heart,
)
from gvsl.data.cohorts.shapes import Points, ellipsoid, rotation, smooth_field
from gvsl.errors import GVSLInputError

__all__ = ["HEART_CLASSES", "BodyPose", "PhantomSubject", "body_pose", "generate_subject"]

AIR_HU = -1000.0


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


#: whole-body pose between subjects: rotation about the long (z) axis, tilt about x and y (degrees),
#: size factor, shift of the body in the field of view (mm, per axis: x, y, z)
BODY_ROLL_DEG = 15.0
BODY_TILT_DEG = 5.0
BODY_SCALE = (0.88, 1.12)
BODY_SHIFT_MM = (20.0, 15.0, 12.0)
#: contrast bolus: peak enhancement (HU) and the share of it the right / left heart reach at the
#: earliest (phase 0, arterial) and latest (phase 1, venous) timing
BLOOD_PEAK_HU = (280.0, 450.0)
RIGHT_HEART_SHARE = (0.5, 1.1)
LEFT_HEART_SHARE = (1.0, 0.6)


@dataclass(frozen=True)
class _Tissue:
    """Per-subject tissue levels (HU): the contrast timing (``phase``) sets the left- and right-heart blood."""

    fat: float
    muscle: float
    lung: float
    left_blood: float  # LA, LV, aorta, coronaries: arterial
    right_blood: float  # RA, RV, pulmonary arteries: venous return
    myocardium: float
    bone: float
    marrow: float
    phase: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Tissue:
        fat, muscle, lung = rng.uniform(-115, -80), rng.uniform(30, 60), rng.uniform(-880, -820)
        peak, phase = rng.uniform(*BLOOD_PEAK_HU), rng.uniform(0.0, 1.0)
        myocardium, bone, marrow = rng.uniform(70, 120), rng.uniform(600, 900), rng.uniform(180, 300)
        left = peak * (LEFT_HEART_SHARE[0] + phase * (LEFT_HEART_SHARE[1] - LEFT_HEART_SHARE[0]))
        right = peak * (RIGHT_HEART_SHARE[0] + phase * (RIGHT_HEART_SHARE[1] - RIGHT_HEART_SHARE[0]))
        return cls(
            fat=fat,
            muscle=muscle,
            lung=lung,
            left_blood=left,
            right_blood=right,
            myocardium=myocardium,
            bone=bone,
            marrow=marrow,
            phase=phase,
        )


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


@dataclass(frozen=True)
class _Trunk:
    """The body's elliptic cross-section and the depths (mm) of its fat and muscle layers."""

    scale: np.ndarray
    fat_mm: float
    muscle_mm: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Trunk:
        scale = rng.uniform(0.9, 1.1, size=2)
        fat_mm, muscle_mm = rng.uniform(6.0, 18.0), rng.uniform(8.0, 14.0)
        return cls(scale, fat_mm, muscle_mm)

    def ellipse(self, p: Points, grow: float) -> np.ndarray:
        """< 1 inside the body's outline grown by ``grow`` mm (shrunk where negative), along z."""
        radii = np.array((140.0 * self.scale[0], 95.0 * self.scale[1]))
        return (p.x / (radii[0] + grow)) ** 2 + (p.y / (radii[1] + grow)) ** 2


@dataclass(frozen=True)
class _Spine:
    """The vertebral column: the body (marrow inside its cortex), the canal and the spinous process."""

    vertebra: np.ndarray
    cortex: np.ndarray
    canal: np.ndarray
    spinous: np.ndarray

    @classmethod
    def at(cls, p: Points) -> _Spine:
        vertebra = ((p.x / 20.0) ** 2 + ((p.y + 62.0) / 17.0) ** 2) < 1
        cortex = vertebra & ~(((p.x / 16.0) ** 2 + ((p.y + 62.0) / 13.0) ** 2) < 1)
        canal = ((p.x / 8.0) ** 2 + ((p.y + 86.0) / 7.0) ** 2) < 1
        spinous = (np.abs(p.x) < 5.0) & (p.y < -92.0) & (p.y > -115.0)
        return cls(vertebra, cortex, canal, spinous)


def generate_subject(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    opacity: bool | None = None,
) -> PhantomSubject:
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
    p = _deformed_grid(rng, shape, spacing)
    trunk = _Trunk.draw(rng)
    image = _chest_wall(p, shape, trunk, tissue)
    lungs = _lungs(p, trunk, rng)
    spine = _Spine.at(p)
    heart, descending = _place_heart(p, rng)
    lungs &= ~heart.envelope & ~spine.vertebra & ~descending & ~(np.abs(p.x) < 22.0)
    _paint_organs(image, lungs, spine, heart, descending, tissue, rng)
    has_opacity = _add_lung_findings(image, lungs, p, opacity, rng)
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.4, 0.8), mode="nearest")
    image += rng.normal(0.0, rng.uniform(10.0, 30.0), size=shape).astype(np.float32)
    return PhantomSubject(
        image_hu=image.astype(np.float32),
        heart=heart.label,
        coronary=heart.coronary.astype(np.uint8),
        opacity=has_opacity,
        spacing=spacing,
        heart_box=_box(heart.label > 0),
        lung_box=_box(lungs),
    )


@dataclass(frozen=True)
class BodyPose:
    """The subject's whole-body similarity transform: anatomy at body coordinate ``b`` lies at world
    ``scale · rotation · b + shift`` (mm, origin at the field of view's centre)."""

    rotation: np.ndarray
    scale: float
    shift: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> BodyPose:
        tilt_x, tilt_y = np.deg2rad(rng.uniform(-BODY_TILT_DEG, BODY_TILT_DEG, size=2))
        roll = np.deg2rad(rng.uniform(-BODY_ROLL_DEG, BODY_ROLL_DEG))
        scale = float(np.exp(rng.uniform(*np.log(BODY_SCALE))))
        shift = rng.uniform(-1.0, 1.0, size=3) * np.array(BODY_SHIFT_MM)
        return cls(rotation(tilt_x, tilt_y, roll), scale, shift)

    def to_world(self, body: Sequence[float]) -> np.ndarray:
        return self.scale * self.rotation @ np.asarray(body, float) + self.shift


def body_pose(seed: int) -> BodyPose:
    """The whole-body pose of subject ``seed`` (drawn as :func:`generate_subject` draws it)."""
    rng = np.random.default_rng(seed)
    _Tissue.draw(rng)
    return BodyPose.draw(rng)


def _deformed_grid(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...]) -> Points:
    """Voxel centres (mm, origin at the volume's centre) mapped into the body's frame: the inverse of the
    subject's whole-body similarity (:class:`BodyPose`), then one smooth elastic deformation of the whole
    body (a backward map: where each voxel samples anatomy). Every organ is drawn in the body frame, so
    the pose moves the heart, lungs, spine and chest wall together."""
    pose = BodyPose.draw(rng)
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    world = Points(*np.meshgrid(*axes, indexing="ij"))
    # body = R^T (world - shift) / scale: ``transformed`` takes the frame's axes as rows, i.e. R^T
    body = world.transformed(pose.rotation.T.astype(np.float32), pose.shift, pose.scale)
    coarse = 5
    strength = rng.uniform(2.0, 5.0)
    return Points(
        *(np.asarray(c, np.float32) + smooth_field(rng, shape, coarse, strength) for c in (body.x, body.y, body.z))
    )


def _chest_wall(p: Points, shape: tuple[int, ...], trunk: _Trunk, tissue: _Tissue) -> np.ndarray:
    """Air around the body; skin fat, the muscle wall, mediastinal fat (replaced by organs later) and the ribs."""
    image = np.full(shape, AIR_HU, np.float32)
    image[trunk.ellipse(p, 0.0) < 1] = tissue.fat
    image[trunk.ellipse(p, -trunk.fat_mm) < 1] = tissue.muscle
    image[trunk.ellipse(p, -trunk.fat_mm - trunk.muscle_mm) < 1] = tissue.fat
    # Ribs: a thin shell under the muscle, interrupted along z with a slant that follows the angle
    angle = np.arctan2(p.y, p.x)
    shell = (trunk.ellipse(p, -trunk.fat_mm - trunk.muscle_mm + 3.0) < 1) & ~(
        trunk.ellipse(p, -trunk.fat_mm - trunk.muscle_mm - 5.0) < 1
    )
    ribs = shell & (np.sin(2 * np.pi * (p.z + 18.0 * np.abs(angle)) / 26.0) > 0.45) & (np.abs(p.x) > 25.0)
    image[ribs] = tissue.bone
    return image


def _lungs(p: Points, trunk: _Trunk, rng: np.random.Generator) -> np.ndarray:
    """Both lungs inside the chest wall, before the mediastinum is cut out of them."""
    lung_tilt = rng.uniform(-6.0, 6.0)
    right_lung = ellipsoid(p, (72.0, -8.0, 10.0 + lung_tilt), (58.0 * trunk.scale[0], 72.0 * trunk.scale[1], 105.0)) < 1
    left_lung = ellipsoid(p, (-72.0, -8.0, 10.0 - lung_tilt), (55.0 * trunk.scale[0], 72.0 * trunk.scale[1], 105.0)) < 1
    return (right_lung | left_lung) & (trunk.ellipse(p, -trunk.fat_mm - trunk.muscle_mm - 6.0) < 1)


def _place_heart(p: Points, rng: np.random.Generator) -> tuple[HeartMasks, np.ndarray]:
    """The canonical heart placed per subject, and the descending aorta (left-posterior of the vertebral
    body), which runs down from where the subject's arch ends."""
    heart_centre = HEART_CENTRE + rng.uniform(-8.0, 8.0, size=3)
    heart_rotation = rotation(*rng.uniform(-0.2, 0.2, size=3))
    heart_scale = rng.uniform(0.9, 1.08)
    masks = canonical_heart(p.transformed(heart_rotation.T, heart_centre, heart_scale), HeartShape.draw(rng))
    arch_end = heart_centre + heart_scale * heart_rotation @ DESCENDING_TOP
    descending = (((p.x - arch_end[0]) ** 2 + (p.y - arch_end[1]) ** 2) < 12.0**2) & (p.z <= arch_end[2])
    return masks, descending


def _paint_organs(
    image: np.ndarray,
    lungs: np.ndarray,
    spine: _Spine,
    heart: HeartMasks,
    descending: np.ndarray,
    tissue: _Tissue,
    rng: np.random.Generator,
) -> None:
    """The lungs with their parenchymal texture, the spine, the vessels and the heart, in this order."""
    image[lungs] = (tissue.lung + smooth_field(rng, image.shape, max(image.shape) // 4, 25.0))[lungs]
    image[heart.envelope] = tissue.fat
    image[heart.walls] = tissue.myocardium
    image[spine.vertebra] = tissue.marrow
    image[spine.cortex | spine.spinous] = tissue.bone
    image[spine.canal] = 15.0
    # Contrast timing: arterial blood (left heart, aorta, coronaries) and venous return (right heart,
    # pulmonary arteries) carry different enhancement, in an order that depends on the subject's phase.
    image[descending | heart.unlabelled_blood] = tissue.left_blood
    image[heart.pulmonary_branches] = tissue.right_blood
    for structure in (LA, LV, AO):
        image[heart.label == structure] = tissue.left_blood
    for structure in (RA, RV, PA):
        image[heart.label == structure] = tissue.right_blood
    image[heart.label == MYO] = tissue.myocardium
    image[heart.coronary] = tissue.left_blood


def _add_lung_findings(
    image: np.ndarray, lungs: np.ndarray, p: Points, opacity: bool | None, rng: np.random.Generator
) -> bool:
    """Ground-glass opacities when ``opacity``; their look-alikes always when it is False, otherwise at times.
    Returns whether opacities were added (the CCC target)."""
    has_opacity = bool(opacity)
    confounders = (opacity is False) or (rng.random() < (0.5 if opacity else 0.3))
    if has_opacity:
        _add_opacities(image, lungs, p, rng)
    if confounders:
        _add_confounders(image, lungs, p, rng)
    return has_opacity


def _add_opacities(image: np.ndarray, lungs: np.ndarray, p: Points, rng: np.random.Generator) -> None:
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
        np.maximum(weight, np.exp(-d2 / (2 * sigma**2)), out=weight)
    lobules = np.clip(1.0 + smooth_field(rng, image.shape, max(image.shape) // 6, 0.4), 0.3, 1.5)
    weight = np.clip(weight * lobules, 0.0, 1.0) * lungs
    target = rng.uniform(-600.0, -350.0)
    image += weight * (target - image)


def _add_confounders(image: np.ndarray, lungs: np.ndarray, p: Points, rng: np.random.Generator) -> None:
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
