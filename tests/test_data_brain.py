"""The mni-brain generator (gvsl.data.cohorts.brain): determinism, geometry, labels, T1 contrast, input checks,
prepare."""

import numpy as np
import pytest

from gvsl.data import load_prepared, prepare
from gvsl.data.cohorts.brain import (
    BRAIN_CLASSES,
    CEREBELLUM,
    CLASS_TISSUE,
    EXTERNAL_CSF,
    LEFT_GM,
    LEFT_WM,
    MAX_ROTATION_DEG,
    RIGHT_GM,
    RIGHT_WM,
    SHIFT_MM,
    VENTRICLES,
    BrainSubject,
    generate_subject,
)
from gvsl.errors import GVSLInputError

SEEDS = range(5)
DEFAULT_SHAPE = (48, 57, 51)
TISSUE_CLASSES = {t: [k for k, v in CLASS_TISSUE.items() if v == t] for t in (0, 1, 2)}  # CSF, GM, WM


@pytest.fixture(scope="module")
def subjects() -> list[BrainSubject]:
    return [generate_subject(seed) for seed in SEEDS]


def world_centroid(subject: BrainSubject) -> np.ndarray:
    return np.argwhere(subject.label > 0).mean(axis=0) @ subject.affine[:3, :3].T + subject.affine[:3, 3]


def test_same_seed_same_subject_other_seed_another(subjects):
    again = generate_subject(SEEDS[0])
    np.testing.assert_array_equal(again.image, subjects[0].image)
    np.testing.assert_array_equal(again.label, subjects[0].label)
    np.testing.assert_array_equal(again.affine, subjects[0].affine)
    assert not np.array_equal(subjects[0].image, subjects[1].image)
    assert not np.array_equal(subjects[0].label, subjects[1].label)


def test_shapes_dtypes_ranges_and_affine(subjects):
    names = "ventricles external_csf left_grey_matter right_grey_matter left_white_matter right_white_matter cerebellum"
    assert names.split() == list(BRAIN_CLASSES)
    for s in subjects:
        assert s.image.shape == s.label.shape == DEFAULT_SHAPE
        assert s.image.dtype == np.float32 and s.label.dtype == np.uint8
        assert s.image.min() == 0.0 and s.image.max() == 1.0
        assert set(np.unique(s.label)) <= set(range(len(BRAIN_CLASSES) + 1))
        assert s.spacing == (4.0, 4.0, 4.0)
        assert s.affine.shape == (4, 4) and s.affine.dtype == np.float64
        np.testing.assert_array_equal(s.affine[:3, :3], np.diag([4.0, 4.0, 4.0]))
    other = generate_subject(3, shape=(30, 36, 28), spacing=(6.0, 5.5, 6.0))
    assert other.image.shape == other.label.shape == (30, 36, 28) and other.spacing == (6.0, 5.5, 6.0)
    np.testing.assert_array_equal(other.affine[:3, :3], np.diag([6.0, 5.5, 6.0]))


def test_world_coordinates_are_mni(subjects):
    # The MNI152 template is left-right symmetric and its brain's centre of mass sits behind and above
    # the anterior commissure (the origin): a grid in the wrong place or orientation misses these, up to
    # the subject's position in the field of view (within SHIFT_MM per axis).
    for s in subjects:
        x, y, z = world_centroid(s)
        assert abs(x) < 4.0 + SHIFT_MM and -30.0 - SHIFT_MM < y < -10.0 + SHIFT_MM and -SHIFT_MM < z < 20.0 + SHIFT_MM
        left, right = (world_centroid_of(s, k)[0] for k in (LEFT_GM, RIGHT_GM))
        assert left < x < right  # hemispheres on their sides of the subject's midline


def world_centroid_of(subject: BrainSubject, k: int) -> np.ndarray:
    return np.argwhere(subject.label == k).mean(axis=0) @ subject.affine[:3, :3].T + subject.affine[:3, 3]


def test_classes_present_with_plausible_fractions(subjects):
    for s in subjects:
        fractions = {k: np.mean(s.label == k) for k in range(1, len(BRAIN_CLASSES) + 1)}
        assert all(f > 0.001 for f in fractions.values()), fractions  # every class present
        assert fractions[VENTRICLES] < fractions[EXTERNAL_CSF]
        for left, right in ((LEFT_GM, RIGHT_GM), (LEFT_WM, RIGHT_WM)):
            assert 0.7 < fractions[left] / fractions[right] < 1.4
        assert 0.01 < fractions[CEREBELLUM] < 0.06
        gm, wm = fractions[LEFT_GM] + fractions[RIGHT_GM], fractions[LEFT_WM] + fractions[RIGHT_WM]
        assert gm > wm > fractions[VENTRICLES] + fractions[EXTERNAL_CSF]
    coarse = generate_subject(7, shape=(32, 38, 34), spacing=(6.0, 6.0, 6.0))  # the default profile's grid
    assert all((coarse.label == k).sum() >= 40 for k in range(1, len(BRAIN_CLASSES) + 1))


def test_label_matches_t1_contrast_that_still_varies(subjects):
    gm_wm = []
    for s in subjects:
        csf, gm, wm = (s.image[np.isin(s.label, TISSUE_CLASSES[t])].mean() for t in (0, 1, 2))
        background = s.image[s.label == 0].mean()
        assert wm > 1.1 * gm and gm > 1.2 * csf and csf > background, (csf, gm, wm, background)
        gm_wm.append(gm / wm)
    # gamma and per-tissue jitter: the contrast is not the template's in every subject
    assert np.ptp(gm_wm) > 0.03


def test_classes_of_one_tissue_are_separable_only_by_layout(subjects):
    """Left and right GM (and WM), ventricles and external CSF share their intensity distribution: their
    interquartile ranges overlap in every subject, and their medians differ less than the spread."""
    for s in subjects:
        for a, b in ((LEFT_GM, RIGHT_GM), (LEFT_WM, RIGHT_WM), (VENTRICLES, EXTERNAL_CSF)):
            qa, qb = (np.percentile(s.image[s.label == k], [25, 50, 75]) for k in (a, b))
            assert qa[0] < qb[2] and qb[0] < qa[2], (a, b, qa, qb)
            assert abs(qa[1] - qb[1]) < max(qa[2] - qa[0], qb[2] - qb[0]), (a, b)


def test_deformation_moves_labels_and_the_brain_within_bounds():
    many = [generate_subject(seed, shape=(32, 38, 34), spacing=(6.0, 6.0, 6.0)) for seed in range(40)]
    first, second = many[0].label, many[1].label
    brain = (first > 0) | (second > 0)
    assert np.count_nonzero((first != second) & brain) > 0.3 * np.count_nonzero(brain)
    centroids = np.array([world_centroid(s) for s in many])
    spread = np.ptp(centroids, axis=0)
    assert (spread > 8.0).all() and (spread < 2 * SHIFT_MM + 24.0).all()  # ±10 mm shifts, plus pose
    assert MAX_ROTATION_DEG == 10.0


def test_brain_inside_the_field_of_view_for_many_seeds():
    """The default profile's 6 mm grid (and the 4 mm default, the same 192×228×204 mm) hold the labelled brain."""
    for seed in range(200):
        s = generate_subject(seed, shape=(32, 38, 34), spacing=(6.0, 6.0, 6.0))
        for axis in range(3):
            assert not np.take(s.label, [0, -1], axis=axis).any(), (seed, axis)
        assert set(np.unique(s.label)) == set(range(len(BRAIN_CLASSES) + 1)), seed


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((48, 48), (4.0, 4.0, 4.0)),
        ((48, 48, 0), (4.0, 4.0, 4.0)),
        ((48, -1, 40), (4.0, 4.0, 4.0)),
        ((48, 48.5, 40), (4.0, 4.0, 4.0)),
        ((1, 1, 1), (4.0, 4.0, 4.0)),
        (48, (4.0, 4.0, 4.0)),
        ((48, 48, 40), (4.0, 4.0)),
        ((48, 48, 40), (4.0, 0.0, 4.0)),
        ((48, 48, 40), (4.0, 4.0, float("nan"))),
        ((48, 48, 40), (4.0, "4", 4.0)),
        ((48, 48, 40), 4.0),
    ],
)
def test_bad_shape_or_spacing(shape, spacing):
    with pytest.raises(GVSLInputError, match="mni-brain: (shape|spacing)"):
        generate_subject(0, shape=shape, spacing=spacing)


@pytest.mark.filterwarnings("error:mni-brain. the fixed crop cut labelled voxels")  # the brain box holds it all
def test_prepare_mni_brain(tmp_path):
    ds = load_prepared(prepare("mni-brain", tmp_path / "SBM", subjects=3), task="SBM")
    assert ds.info.classes == BRAIN_CLASSES and ds.info.spacing == (4.0, 4.0, 4.0)
    assert ds.info.counts == {"train": 1, "val": 1, "test": 1}
    assert sorted(ds.manifest["split"]) == ["test", "train", "val"]
    for case_id in ds.manifest["id"]:
        case = ds.load_case(case_id)
        assert case.image.shape == case.label.shape == (42, 51, 42)  # 168×204×168 mm
        assert case.image.min() == 0.0 and case.image.max() == 1.0
        assert set(np.unique(case.label)) == set(range(len(BRAIN_CLASSES) + 1))
