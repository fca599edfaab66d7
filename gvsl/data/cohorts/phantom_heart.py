"""The canonical heart of the generated chest CT (:mod:`gvsl.data.cohorts.phantom`): seven labelled structures
(MM-WHS 2017 order, :data:`HEART_CLASSES`), the unlabelled walls and vessels, and the coronary arteries.

The heart is built in its own frame (mm, RAS+, origin at the LV cavity centre) from per-subject
shapes (:class:`HeartShape`): each of the six blood-pool structures (LV, RV, LA, RA, aorta, pulmonary
trunk) has its own size (0.82–1.18, times a per-axis 0.93–1.07 for the chambers), the chambers and
vessels their own offsets (±3 mm), and the LV long axis its own orientation (tilted up to 14° from the
nominal base-to-apex direction: a more vertical or more horizontal heart). The thorax places that frame
per subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gvsl.data.cohorts.shapes import Points, ellipsoid, frame, tube

__all__ = [
    "AO",
    "AXIS_SCALE",
    "CHAMBER_SCALE",
    "CORONARY_RADIUS_MM",
    "DESCENDING_TOP",
    "HEART_CENTRE",
    "HEART_CLASSES",
    "LA",
    "LV",
    "MAX_AXIS_TILT_DEG",
    "MYO",
    "PA",
    "RA",
    "RV",
    "HeartMasks",
    "HeartShape",
    "canonical_heart",
]

#: MM-WHS 2017 class order: label values 205, 420, 500, 550, 600, 820, 850 become 1..7
HEART_CLASSES = (
    "myocardium",
    "left_atrium",
    "left_ventricle",
    "right_atrium",
    "right_ventricle",
    "ascending_aorta",
    "pulmonary_artery",
)
MYO, LA, LV, RA, RV, AO, PA = range(1, 8)

CORONARY_RADIUS_MM = 3.5

# The canonical heart (mm, RAS+, origin at the LV cavity centre). The long axis runs from the base
# (right, posterior, superior) to the apex (left, anterior, inferior).
_HEART_AXES = frame((-0.55, 0.5, -0.65))
_LONG, _ACROSS_A, _ACROSS_B = _HEART_AXES
_LV_RADII = np.array((36.0, 20.0, 20.0))
_MYO_MM = 9.0
_BASE_CUT = -0.7  # fraction of the LV long semi-axis where the base (valve plane) opens
# Where the arch meets the descending aorta, in the canonical heart frame (the thorax draws the rest).
DESCENDING_TOP = np.array((-13.0, -75.0, 88.0))
HEART_CENTRE = np.array((-15.0, 25.0, -10.0))  # nominal position in the thorax (mm)


#: per-structure size factor (whole chamber or vessel) and per-axis factor of the chambers
CHAMBER_SCALE = (0.82, 1.18)
AXIS_SCALE = (0.93, 1.07)
#: largest tilt of the LV long axis from the nominal one (degrees)
MAX_AXIS_TILT_DEG = 14.0


@dataclass(frozen=True)
class HeartShape:
    """Per-subject shape of the canonical heart: radius factors of the chambers (per axis, including the
    chamber's own size), size factors of the aorta and pulmonary trunk, centre offsets (mm) and the
    orientation of the LV long axis (``axes``: rows long axis, two perpendiculars)."""

    lv: np.ndarray
    rv: np.ndarray
    la: np.ndarray
    ra: np.ndarray
    ao: float
    pa: float
    shift: dict[str, np.ndarray]
    axes: np.ndarray = field(default_factory=lambda: _HEART_AXES.copy())

    @classmethod
    def draw(cls, rng: np.random.Generator) -> HeartShape:
        factors = {k: rng.uniform(*AXIS_SCALE, size=3) for k in ("lv", "rv", "la", "ra")}
        shift = {k: rng.uniform(-3.0, 3.0, size=3) for k in ("rv", "la", "ra", "ao", "pa")}
        sizes = rng.uniform(*CHAMBER_SCALE, size=6)
        for k, size in zip(("lv", "rv", "la", "ra"), sizes):
            factors[k] = factors[k] * size
        # tilt the long axis towards a random perpendicular direction
        tilt = np.deg2rad(MAX_AXIS_TILT_DEG) * np.sqrt(rng.uniform(0.0, 1.0))
        towards = rng.uniform(0.0, 2 * np.pi)
        long_axis = np.cos(tilt) * _LONG + np.sin(tilt) * (np.cos(towards) * _ACROSS_A + np.sin(towards) * _ACROSS_B)
        return cls(shift=shift, ao=float(sizes[4]), pa=float(sizes[5]), axes=frame(long_axis), **factors)


@dataclass(frozen=True)
class HeartMasks:
    label: np.ndarray  # uint8, HEART_CLASSES
    walls: np.ndarray  # unlabelled muscle: RV free wall, atrial walls
    envelope: np.ndarray  # epicardial fat around the heart
    coronary: np.ndarray
    unlabelled_blood: np.ndarray  # aortic arch, distal pulmonary branches
    pulmonary_branches: np.ndarray  # the distal pulmonary branches alone (right-heart blood)


def canonical_heart(p: Points, shape: HeartShape) -> HeartMasks:
    """The heart's masks, with ``p`` in its canonical frame."""
    axes = shape.axes
    long, across_a = axes[0], axes[1]
    lv_radii = _LV_RADII * shape.lv
    base = p.transformed(axes, (0.0, 0.0, 0.0)).x  # signed distance along the long axis (mm)
    open_base = base >= _BASE_CUT * lv_radii[0]
    lv = (ellipsoid(p, (0, 0, 0), lv_radii, axes) < 1) & open_base
    myo_outer = (ellipsoid(p, (0, 0, 0), lv_radii + _MYO_MM, axes) < 1) & open_base

    # RV: a crescent against the septum, anterior and to the right of the LV
    rv_centre = 18.0 * across_a + 20.0 * np.array((0.3, 0.9, 0.3)) + shape.shift["rv"]
    rv_radii = np.array((32.0, 26.0, 15.0)) * shape.rv
    rv_axes = frame(long)[[0, 2, 1]]
    rv = (ellipsoid(p, rv_centre, rv_radii, rv_axes) < 1) & ~myo_outer & (base >= -30.0)
    rv_wall = (ellipsoid(p, rv_centre, rv_radii + 4.0, rv_axes) < 1) & ~myo_outer & ~rv & (base >= -34.0)

    base_point = long * (_BASE_CUT * lv_radii[0])
    la_centre = base_point + np.array((-2.0, -22.0, 10.0)) + shape.shift["la"]
    la_radii = np.array((26.0, 16.0, 18.0)) * shape.la
    la = (ellipsoid(p, la_centre, la_radii) < 1) & ~myo_outer
    ra_centre = rv_centre + np.array((26.0, -20.0, 26.0)) + shape.shift["ra"]
    ra_radii = np.array((20.0, 20.0, 24.0)) * shape.ra
    ra = (ellipsoid(p, ra_centre, ra_radii) < 1) & ~myo_outer & ~rv
    atrial_walls = (ellipsoid(p, la_centre, la_radii + 3.0) < 1) | (ellipsoid(p, ra_centre, ra_radii + 3.0) < 1)

    # Aorta: root on the LV base, ascending (labelled) up to the arch, which turns posterior and left
    # into the descending aorta (unlabelled, drawn by the thorax).
    root = base_point + np.array((4.0, 4.0, 6.0)) + shape.shift["ao"]
    ascending_top = root + np.array((5.0, 5.0, 44.0))
    ascending = tube(p, [base_point, root, ascending_top], 13.0 * shape.ao)
    arch = tube(p, [ascending_top, ascending_top + np.array((-12.0, -22.0, 16.0)), DESCENDING_TOP], 12.0 * shape.ao)
    # Pulmonary trunk: from the RV outflow, anterior and left of the aortic root, up to the bifurcation
    outflow = root + np.array((-10.0, 20.0, 6.0)) + shape.shift["pa"]
    bifurcation = root + np.array((-22.0, -10.0, 36.0))
    trunk = tube(p, [outflow, root + np.array((-20.0, 12.0, 24.0)), bifurcation], 12.0 * shape.pa)
    left_pa = tube(p, [bifurcation, bifurcation + np.array((-40.0, -18.0, -2.0))], 9.0 * shape.pa)
    right_pa = tube(
        p,
        [bifurcation, bifurcation + np.array((30.0, -22.0, -6.0)), bifurcation + np.array((62.0, -26.0, -10.0))],
        9.0 * shape.pa,
    )
    proximal = ellipsoid(p, bifurcation, (28.0, 28.0, 28.0)) < 1

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

    coronary = _coronaries(p, axes, lv_radii, rv_centre, rv_radii, root) & (label == 0) & ~rv_wall
    envelope = (
        (ellipsoid(p, (0, 0, 0), lv_radii + _MYO_MM + 8.0, axes) < 1)
        | (ellipsoid(p, rv_centre, rv_radii + 8.0, rv_axes) < 1)
        | (ellipsoid(p, la_centre, la_radii + 8.0) < 1)
        | (ellipsoid(p, ra_centre, ra_radii + 8.0) < 1)
    )
    branches = (right_pa | left_pa) & ~proximal & (label == 0) & ~coronary
    return HeartMasks(
        label=label,
        walls=(rv_wall | atrial_walls) & (label == 0),
        envelope=envelope,
        coronary=coronary,
        unlabelled_blood=unlabelled_blood & ~coronary,
        pulmonary_branches=branches,
    )


def _coronaries(
    p: Points, axes: np.ndarray, lv_radii: np.ndarray, rv_centre: np.ndarray, rv_radii: np.ndarray, root: np.ndarray
) -> np.ndarray:
    """LAD, LCx and RCA as tubes just outside the epicardium, starting at the aortic root."""
    outer = lv_radii + _MYO_MM
    long, across_a, across_b = axes
    lift = CORONARY_RADIUS_MM + 1.0

    def around(centre: np.ndarray, radii: np.ndarray, level: float, degrees: float) -> np.ndarray:
        # a point on the ellipsoid (semi-axes along LONG, ACROSS_A, ACROSS_B) at this long-axis level and
        # angle from ACROSS_A towards -ACROSS_B, lifted off the surface by ``lift``
        ring = np.sqrt(max(1.0 - (level / radii[0]) ** 2, 0.02))
        angle = np.deg2rad(degrees)
        return (
            centre
            + level * long
            + np.cos(angle) * (ring * radii[1] + lift) * across_a
            - np.sin(angle) * (ring * radii[2] + lift) * across_b
        )

    lv_ring = np.array((outer[0], outer[1], outer[2]))
    # LAD: anterior interventricular groove, base to apex; LCx: left atrioventricular groove, anterior to
    # posterior; RCA: right atrioventricular groove around the RV's acute margin.
    lad = [root + np.array((-8.0, 8.0, -4.0))] + [
        around(np.zeros(3), lv_ring, level, 62.0) for level in np.linspace(-24.0, outer[0] * 0.98, 9)
    ]
    base_level = _BASE_CUT * lv_radii[0] + 5.0
    lcx = [lad[1]] + [around(np.zeros(3), lv_ring, base_level, d) for d in np.linspace(75.0, 215.0, 8)]
    rv_ring = np.array((rv_radii[0], rv_radii[2], rv_radii[1]))  # RV semi-axes along (LONG, ACROSS_A, ACROSS_B)
    rca = [root + np.array((10.0, 8.0, -2.0))] + [
        around(rv_centre, rv_ring, -22.0, d) for d in np.linspace(40.0, -150.0, 9)
    ]
    return tube(p, lad, CORONARY_RADIUS_MM) | tube(p, lcx, CORONARY_RADIUS_MM) | tube(p, rca, CORONARY_RADIUS_MM)
