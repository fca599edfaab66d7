"""The mni-brain generator (gvsl.data.brain): determinism, geometry, labels, T1 contrast, input checks, prepare."""

import numpy as np
import pytest

from gvsl.data import load_prepared, prepare
from gvsl.data.brain import BRAIN_CLASSES, BrainSubject, generate_subject
from gvsl.errors import GVSLInputError

CSF, GM, WM = 1, 2, 3
SEEDS = range(5)


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
    assert BRAIN_CLASSES == ("csf", "grey_matter", "white_matter")
    for s in subjects:
        assert s.image.shape == s.label.shape == (48, 48, 40)
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
    # the anterior commissure (the origin): a grid in the wrong place or orientation misses these.
    for s in subjects:
        x, y, z = world_centroid(s)
        assert abs(x) < 4.0 and -30.0 < y < -10.0 and 0.0 < z < 20.0


def test_classes_present_with_plausible_fractions(subjects):
    for s in subjects:
        fractions = [np.mean(s.label == k) for k in (CSF, GM, WM)]
        assert 0.01 < fractions[0] < 0.05, fractions  # ventricles and sulcal CSF
        assert 0.10 < fractions[1] < 0.25, fractions
        assert 0.05 < fractions[2] < 0.15, fractions
        assert fractions[1] > fractions[2] > fractions[0]


def test_label_matches_t1_contrast_that_still_varies(subjects):
    gm_wm = []
    for s in subjects:
        csf, gm, wm = (s.image[s.label == k].mean() for k in (CSF, GM, WM))
        background = s.image[s.label == 0].mean()
        assert wm > 1.1 * gm and gm > 1.2 * csf and csf > background, (csf, gm, wm, background)
        gm_wm.append(gm / wm)
    # gamma and per-tissue jitter: the contrast is not the template's in every subject
    assert np.ptp(gm_wm) > 0.03


def test_deformation_moves_labels_but_not_the_brain(subjects):
    first, second = subjects[0].label, subjects[1].label
    brain = (first > 0) | (second > 0)
    assert np.count_nonzero((first != second) & brain) > 0.1 * np.count_nonzero(brain)
    centroids = np.array([world_centroid(s) for s in subjects])
    assert np.abs(centroids - centroids.mean(axis=0)).max() < 2 * 4.0  # within two 4 mm voxels
    for s in subjects:
        grid_centre = (np.array(s.label.shape) - 1) / 2
        assert np.abs(np.argwhere(s.label > 0).mean(axis=0) - grid_centre).max() < 2.5


def test_brain_inside_the_default_field_of_view(subjects):
    for s in subjects:
        for axis in range(3):
            assert not np.take(s.label, [0, -1], axis=axis).any(), f"brain touches the border along axis {axis}"


@pytest.mark.parametrize("shape, spacing", [
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
])
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
        assert case.image.shape == case.label.shape == (40, 48, 40)
        assert case.image.min() == 0.0 and case.image.max() == 1.0
        assert set(np.unique(case.label)) == {0, CSF, GM, WM}
