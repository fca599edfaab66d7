"""The phantom-ct generator: determinism, anatomy and topology, pose and shape variation, contrast timing,
the field of view and the label-free ROIs, the CCC signal."""

import inspect

import numpy as np
import pytest
from scipy import ndimage

from gvsl.data.cohorts.phantom import (
    BODY_ROLL_DEG,
    BODY_SCALE,
    BODY_SHIFT_MM,
    BODY_TILT_DEG,
    body_pose,
    generate_subject,
)
from gvsl.data.cohorts.phantom_heart import AO, CHAMBER_SCALE, HEART_CLASSES, LA, LV, MYO, PA, RA, RV, HeartShape
from gvsl.data.preprocess import crop_or_pad
from gvsl.data.sources.conventions import ROI_CENTRE_MM, ROI_MM, fixed_roi
from gvsl.errors import GVSLInputError

SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(seed, shape=SHAPE) for seed in range(4)]


def centroid(mask: np.ndarray) -> np.ndarray:
    """Centre of mass in mm, RAS+ (axis 0 → right, 1 → anterior, 2 → superior)."""
    return np.array(ndimage.center_of_mass(mask)) * 5.0


def test_same_seed_same_subject_and_seeds_differ():
    a, b, c = (
        generate_subject(3, shape=(40, 40, 40)),
        generate_subject(3, shape=(40, 40, 40)),
        generate_subject(4, shape=(40, 40, 40)),
    )
    np.testing.assert_array_equal(a.image_hu, b.image_hu)
    np.testing.assert_array_equal(a.heart, b.heart)
    assert not np.array_equal(a.heart, c.heart)
    assert not np.allclose(a.image_hu, c.image_hu)


def test_arrays_types_and_ranges(subjects):
    for subject in subjects:
        assert subject.image_hu.shape == SHAPE and subject.image_hu.dtype == np.float32
        assert subject.heart.dtype == np.uint8 and subject.coronary.dtype == np.uint8
        assert set(np.unique(subject.heart)) == set(range(len(HEART_CLASSES) + 1))
        assert set(np.unique(subject.coronary)) == {0, 1}
        assert -1200 < subject.image_hu.min() and subject.image_hu.max() < 1200
        assert not np.any(subject.coronary.astype(bool) & (subject.heart > 0))  # coronaries lie outside chambers
        assert subject.spacing == (5.0, 5.0, 5.0)
        assert (subject.heart > 0)[subject.heart_box].sum() == (subject.heart > 0).sum()


def test_topology_is_the_same_in_every_subject(subjects):
    """The arrangement that geometric matching can learn: MM-WHS anatomy in every subject."""
    for subject in subjects:
        c = {k: centroid(subject.heart == k) for k in (MYO, LA, LV, RA, RV, AO, PA)}
        assert c[LV][0] < c[RV][0]  # the LV lies to the patient's left of the RV
        assert c[RV][1] > c[LA][1]  # the RV is anterior, the LA posterior
        assert c[LA][2] > c[LV][2] and c[RA][2] > c[RV][2]  # atria above the ventricles
        assert c[RA][0] > c[LA][0]  # right atrium to the right
        assert c[AO][2] > c[LV][2] and c[PA][2] > c[RV][2]  # great vessels rise above the ventricles
        assert c[PA][0] < c[AO][0]  # pulmonary trunk on the left of the ascending aorta
        # the myocardium wraps the LV cavity: dilating the cavity by one voxel lands in myocardium mostly
        shell = ndimage.binary_dilation(subject.heart == LV) & (subject.heart != LV)
        assert np.mean(subject.heart[shell] == MYO) > 0.6
        # each structure is one connected piece
        for k in (MYO, LA, LV, RA, RV, AO):
            labels, _count = ndimage.label(subject.heart == k)
            sizes = np.bincount(labels.ravel())[1:]
            assert sizes.max() >= 0.95 * sizes.sum(), (k, sizes)


def test_contrast_timing_makes_chamber_intensity_ambiguous_across_subjects():
    """Left and right heart take different enhancement in an order set by each subject's contrast phase:
    in some subjects the LV is brighter than the RV, in others darker, so intensity cannot name a chamber."""
    differences, contrast = [], []
    for seed in range(12):
        s = generate_subject(seed, shape=(48, 48, 48), spacing=(5.0, 5.0, 5.0))
        core = {k: ndimage.binary_erosion(s.heart == k) for k in (LV, RV, LA, RA, MYO)}
        mean = {k: s.image_hu[m].mean() for k, m in core.items()}
        differences.append(mean[LV] - mean[RV])
        contrast.append(min(mean[k] for k in (LV, RV, LA, RA)) - mean[MYO])
        # left heart shares one level, right heart another (up to blur and noise)
        assert abs(mean[LV] - mean[LA]) < 40 and abs(mean[RV] - mean[RA]) < 40
    assert min(differences) < -30.0 and max(differences) > 30.0
    assert min(contrast) > 10.0  # blood stays brighter than the myocardium


def test_subjects_vary_in_pose_size_and_contrast(subjects):
    positions = np.array([centroid(s.heart == LV) for s in subjects])
    volumes = np.array([(s.heart > 0).sum() for s in subjects])
    blood = np.array([s.image_hu[ndimage.binary_erosion(s.heart == LV)].mean() for s in subjects])
    assert positions.std(axis=0).max() > 5.0
    assert volumes.max() / volumes.min() > 1.1
    assert blood.max() - blood.min() > 30.0


def test_body_pose_varies_within_its_bounds_and_moves_the_whole_body():
    poses = [body_pose(seed) for seed in range(200)]
    scales = np.array([p.scale for p in poses])
    shifts = np.array([p.shift for p in poses])
    rolls = np.degrees([np.arctan2(p.rotation[1, 0], p.rotation[0, 0]) for p in poses])
    assert BODY_SCALE[0] <= scales.min() and scales.max() <= BODY_SCALE[1] and np.ptp(scales) > 0.15
    assert (np.abs(shifts) <= np.array(BODY_SHIFT_MM)).all()
    assert (np.ptp(shifts, axis=0) > np.array(BODY_SHIFT_MM)).all()
    assert np.abs(rolls).max() <= BODY_ROLL_DEG + BODY_TILT_DEG and np.ptp(rolls) > BODY_ROLL_DEG
    for p in poses[:5]:
        np.testing.assert_allclose(p.rotation @ p.rotation.T, np.eye(3), atol=1e-9)
    # the pose is the one generate_subject draws: the spine (fixed in the body) moves with it
    for seed in (0, 1, 2):
        s, pose = generate_subject(seed, shape=(32, 32, 32), spacing=(10.0, 10.0, 10.0)), body_pose(seed)
        marrow = np.argwhere((s.image_hu > 150) & (s.image_hu < 350))
        spine_xy = pose.to_world((0.0, -62.0, 0.0))[:2]
        near = np.abs((marrow[:, :2] - 15.5) * 10.0 - spine_xy).max(axis=1) < 25.0
        assert near.sum() > 10


def test_heart_shape_varies_per_chamber_and_axis():
    shapes = [HeartShape.draw(np.random.default_rng(seed)) for seed in range(50)]
    lv, rv = np.array([s.lv.mean() for s in shapes]), np.array([s.rv.mean() for s in shapes])
    assert np.ptp(lv) > 0.2 and np.ptp(rv) > 0.2 and abs(np.corrcoef(lv, rv)[0, 1]) < 0.5  # independent sizes
    assert min(s.ao for s in shapes) >= CHAMBER_SCALE[0] and max(s.pa for s in shapes) <= CHAMBER_SCALE[1]
    tilts = np.degrees([np.arccos(np.clip(s.axes[0] @ shapes[0].axes[0], -1, 1)) for s in shapes[1:]])
    assert tilts.max() > 8.0


@pytest.mark.parametrize("fov_mm, spacing", [(320.0, 10.0), (240.0, 6.0)])  # the default / CCC view, SAC's
def test_heart_and_lungs_inside_the_field_of_view_for_many_seeds(fov_mm, spacing):
    """Checked on coarse grids (cheap); the field of view is physical, so it holds at every spacing."""
    n = int(fov_mm / spacing)
    for seed in range(200):
        s = generate_subject(seed, shape=(n, n, n), spacing=(spacing,) * 3)
        assert set(np.unique(s.heart)) == set(range(8)), seed
        for mask in (s.heart > 0, s.coronary > 0):
            for axis in range(3):
                assert not np.take(mask, [0, -1], axis=axis).any(), (seed, axis)
        lungs = s.image_hu < -500
        lungs[[0, -1]] = lungs[:, [0, -1]] = False  # air outside the body at the borders
        assert lungs[: n // 2].sum() > 20 and lungs[n // 2 :].sum() > 20, seed  # both lungs in view
        if fov_mm == 320.0:  # the chest CT's view holds the lungs whole
            assert not any(b.start == 0 or b.stop == n for b in s.lung_box), seed


@pytest.mark.parametrize("kind, spacing", [("phantom-heart", 10.0), ("phantom-coronary", 6.0)])
def test_label_free_roi_holds_every_heart(kind, spacing):
    """SHC's heart box and SAC's coronary box, placed from the grid alone, keep all labels for 200 seeds."""
    n = int(round({"phantom-heart": 320.0, "phantom-coronary": 240.0}[kind] / spacing))
    grid = (n, n, n), (spacing,) * 3
    roi = fixed_roi(*grid, ROI_MM[kind], ROI_CENTRE_MM[kind])
    assert not any("label" in name for name in inspect.signature(fixed_roi).parameters)
    for seed in range(200):
        s = generate_subject(seed, shape=grid[0], spacing=grid[1])
        mask = s.heart if kind == "phantom-heart" else s.coronary
        kept, _ = crop_or_pad(mask, np.eye(4), roi)
        assert np.count_nonzero(kept) == np.count_nonzero(mask), seed


def test_roi_cost_and_heart_moves_inside_it():
    assert fixed_roi((64,) * 3, (5.0,) * 3, ROI_MM["phantom-heart"], ROI_CENTRE_MM["phantom-heart"])[1] == (40,) * 3
    assert (
        np.prod(fixed_roi((80,) * 3, (3.0,) * 3, ROI_MM["phantom-coronary"], ROI_CENTRE_MM["phantom-coronary"])[1])
        <= 1.2 * 48**3
    )
    roi = fixed_roi((32,) * 3, (10.0,) * 3, ROI_MM["phantom-heart"], ROI_CENTRE_MM["phantom-heart"])
    centroids = np.array(
        [
            ndimage.center_of_mass(
                crop_or_pad(generate_subject(seed, shape=(32,) * 3, spacing=(10.0,) * 3).heart > 0, np.eye(4), roi)[0]
            )
            for seed in range(20)
        ]
    )
    assert centroids.std(axis=0).min() * 10.0 > 5.0  # mm: position in the ROI is no longer a constant


def test_opacity_is_the_ccc_signal_and_negatives_carry_confounders():
    lung_means = {True: [], False: []}
    for seed in range(6):
        for opacity in (True, False):
            subject = generate_subject(100 + seed, shape=(48, 48, 48), spacing=(6.5, 6.5, 6.5), opacity=opacity)
            assert subject.opacity is opacity
            lungs = subject.image_hu[subject.lung_box]
            lung_means[opacity].append(np.mean((lungs > -700) & (lungs < -200)))
    # ground glass (-700..-200 HU) is more frequent with opacities in every subject (same seed, same
    # anatomy), yet present in negatives too (lung edges, confounders; the body's pose adds edge voxels)
    assert all(p > n for p, n in zip(lung_means[True], lung_means[False]))
    assert np.mean(lung_means[True]) > 1.3 * np.mean(lung_means[False])
    assert np.mean(lung_means[False]) > 0.0


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((64, 64), (5, 5, 5)),
        ((4, 64, 64), (5, 5, 5)),
        ((64, 64, 64), (5, 0, 5)),
        ((64, 64, 64), (5, float("nan"), 5)),
        (("a", 2, 3), (5, 5, 5)),
    ],
)
def test_bad_shape_or_spacing_is_a_clear_error(shape, spacing):
    with pytest.raises(GVSLInputError, match="phantom-ct"):
        generate_subject(0, shape=shape, spacing=spacing)
