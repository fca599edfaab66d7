"""The phantom-ct generator: determinism, anatomy and topology, shared intensities, the CCC signal."""

import numpy as np
import pytest
from scipy import ndimage

from gvsl.data.phantom import AO, HEART_CLASSES, LA, LV, MYO, PA, RA, RV, generate_subject
from gvsl.errors import GVSLInputError

SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(seed, shape=SHAPE) for seed in range(4)]


def centroid(mask: np.ndarray) -> np.ndarray:
    """Centre of mass in mm, RAS+ (axis 0 → right, 1 → anterior, 2 → superior)."""
    return np.array(ndimage.center_of_mass(mask)) * 5.0


def test_same_seed_same_subject_and_seeds_differ():
    a, b, c = generate_subject(3, shape=(40, 40, 40)), generate_subject(3, shape=(40, 40, 40)), generate_subject(
        4, shape=(40, 40, 40))
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
            labels, count = ndimage.label(subject.heart == k)
            sizes = np.bincount(labels.ravel())[1:]
            assert sizes.max() >= 0.95 * sizes.sum(), (k, sizes)


def test_blood_pools_share_one_intensity_so_appearance_is_ambiguous(subjects):
    for subject in subjects:
        smooth = subject.image_hu
        core = {k: ndimage.binary_erosion(subject.heart == k) for k in (LV, RV, LA, RA, AO, PA)}
        means = np.array([smooth[m].mean() for m in core.values() if m.any()])
        noise = np.std(smooth[core[LV]])
        assert means.max() - means.min() < 2 * noise + 10.0
        # the myocardium is darker than blood in a contrast CT
        assert smooth[ndimage.binary_erosion(subject.heart == MYO)].mean() < means.min()


def test_subjects_vary_in_pose_size_and_contrast(subjects):
    positions = np.array([centroid(s.heart == LV) for s in subjects])
    volumes = np.array([(s.heart > 0).sum() for s in subjects])
    blood = np.array([s.image_hu[ndimage.binary_erosion(s.heart == LV)].mean() for s in subjects])
    assert positions.std(axis=0).max() > 1.0
    assert volumes.max() / volumes.min() > 1.1
    assert blood.max() - blood.min() > 30.0


def test_opacity_is_the_ccc_signal_and_negatives_carry_confounders():
    lung_means = {True: [], False: []}
    for seed in range(6):
        for opacity in (True, False):
            subject = generate_subject(100 + seed, shape=(48, 48, 48), spacing=(6.5, 6.5, 6.5), opacity=opacity)
            assert subject.opacity is opacity
            lungs = subject.image_hu[subject.lung_box]
            lung_means[opacity].append(np.mean((lungs > -700) & (lungs < -200)))
    # ground glass (-700..-200 HU) is more frequent with opacities, yet present in negatives too
    assert np.mean(lung_means[True]) > 1.5 * np.mean(lung_means[False])
    assert np.mean(lung_means[False]) > 0.0


@pytest.mark.parametrize("shape, spacing", [((64, 64), (5, 5, 5)), ((4, 64, 64), (5, 5, 5)),
                                            ((64, 64, 64), (5, 0, 5)), ((64, 64, 64), (5, float("nan"), 5)),
                                            (("a", 2, 3), (5, 5, 5))])
def test_bad_shape_or_spacing_is_a_clear_error(shape, spacing):
    with pytest.raises(GVSLInputError, match="phantom-ct"):
        generate_subject(0, shape=shape, spacing=spacing)
