import numpy as np
import pytest

from gvsl.data.preprocess import (
    centred_roi,
    crop_or_pad,
    ct_window,
    foreground_box,
    lung_mask,
    minmax,
    resample,
    roi_shape,
    to_canonical,
)
from gvsl.errors import GVSLInputError

# A non-RAS grid: axis 0 runs along world +z, axis 1 along world -x, axis 2 along world -y, anisotropic.
OBLIQUE_AFFINE = np.array([[0.0, -0.7, 0.0, 12.0], [0.0, 0.0, -1.6, 30.0], [0.7, 0.0, 0.0, -8.0], [0.0, 0.0, 0.0, 1.0]])


def world_coordinates(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def test_ct_window_formula_and_offset():
    hu = np.array([-2000.0, -1024.0, 0.0, 1024.0, 3000.0])
    np.testing.assert_allclose(ct_window(hu), [0.0, 0.0, 0.5, 1.0, 1.0])
    # the authors' pre-training loader: raw values clipped to [0, 2048] without an offset
    np.testing.assert_allclose(ct_window(hu, offset=0), [0.0, 0.0, 0.0, 0.5, 1.0])
    assert ct_window(hu).dtype == np.float32


def test_minmax_range_and_constant_volume():
    out = minmax(np.array([[[2.0, 4.0], [6.0, 10.0]]]))
    assert out.min() == 0.0 and out.max() == 1.0 and out[0, 0, 1] == pytest.approx(0.25)
    with pytest.raises(GVSLInputError, match="scan.nii: constant"):
        minmax(np.full((2, 2, 2), 3.0), name="scan.nii")


def test_to_canonical_is_ras_and_keeps_world_positions():
    array = np.random.default_rng(0).random((5, 6, 7))
    out, affine = to_canonical(array, OBLIQUE_AFFINE)
    assert np.all(np.diag(affine[:3, :3]) > 0) and np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])))
    # voxel with value v sits at the same world point before and after
    src = world_coordinates(array.shape, OBLIQUE_AFFINE)
    dst = world_coordinates(out.shape, affine)
    i = np.unravel_index(17, array.shape)
    j = np.argwhere(out == array[i])[0]
    np.testing.assert_allclose(src[i], dst[tuple(j)])


def test_resample_linear_field_is_exact_at_world_positions():
    # A linear function of world position is reproduced exactly by trilinear interpolation,
    # so any error in the output affine or the sampling would show.
    shape = (30, 28, 14)
    world = world_coordinates(shape, OBLIQUE_AFFINE)
    field = world @ np.array([2.0, -1.0, 0.5]) + 5.0
    canon, canon_affine = to_canonical(field, OBLIQUE_AFFINE)
    out, affine = resample(canon, canon_affine, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), 1.0)
    expected = world_coordinates(out.shape, affine) @ np.array([2.0, -1.0, 0.5]) + 5.0
    inner = tuple(slice(2, -2) for _ in range(3))  # the border repeats edge values
    np.testing.assert_allclose(out[inner], expected[inner], atol=1e-3)
    # field of view preserved: extent in mm within one voxel
    extent_in = np.array(canon.shape) * np.linalg.norm(canon_affine[:3, :3], axis=0)
    assert np.all(np.abs(np.array(out.shape) * 1.0 - extent_in) <= 1.0)


def test_resample_labels_nearest_keeps_values_and_centroid():
    label = np.zeros((40, 40, 16), dtype=np.uint8)
    label[10:20, 22:30, 4:9] = 3
    out, affine = resample(*to_canonical(label, OBLIQUE_AFFINE), (1.0, 1.0, 1.0), label=True)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3}
    centre_in = world_coordinates(label.shape, OBLIQUE_AFFINE)[label == 3].mean(0)
    centre_out = world_coordinates(out.shape, affine)[out == 3].mean(0)
    np.testing.assert_allclose(centre_out, centre_in, atol=0.5)
    volume_in = (label == 3).sum() * 0.7 * 0.7 * 1.6
    assert (out == 3).sum() == pytest.approx(volume_in, rel=0.15)


def test_crop_or_pad_shifts_affine_and_pads():
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    out, out_affine = crop_or_pad(array, affine, ((-1, 2, 3), (3, 3, 5)), fill=-7.0)
    assert out.shape == (3, 3, 5)
    assert out[0, 0, 0] == -7.0 and out[1, 0, 0] == array[0, 2, 3]
    assert out[1, 0, 3] == -7.0  # past the end along axis 2
    # voxel (1, 0, 0) of the crop is voxel (0, 2, 3) of the input: same world point
    np.testing.assert_allclose(out_affine @ [1, 0, 0, 1], affine @ [0, 2, 3, 1])


def test_centred_roi_fits_or_refuses():
    box = foreground_box(np.pad(np.ones((6, 4, 2)), ((10, 10), (3, 5), (0, 9))))
    assert box == (slice(10, 16), slice(3, 7), slice(0, 2))
    start, shape = centred_roi(box, (8, 8, 8), margin=1)
    assert shape == (8, 8, 8) and start == (9, 1, -3)
    with pytest.raises(GVSLInputError, match="case7: region of interest"):
        centred_roi(box, (6, 8, 8), margin=1, name="case7")
    assert centred_roi(box, (6, 8, 8), margin=1, strict=False)[0] == (10, 1, -3)
    assert foreground_box(np.zeros((3, 3, 3))) is None
    assert roi_shape((160, 160, 128), (4.0, 4.0, 4.0)) == (40, 40, 32)


def test_lung_mask_finds_air_inside_body_only():
    shape = (48, 40, 36)
    hu = np.full(shape, -1000.0)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = ((x - 24) / 20) ** 2 + ((y - 20) / 15) ** 2 <= 1
    hu[body] = 40.0
    left = ((x - 15) / 6) ** 2 + ((y - 20) / 8) ** 2 + ((z - 18) / 12) ** 2 <= 1
    right = ((x - 33) / 6) ** 2 + ((y - 20) / 8) ** 2 + ((z - 18) / 12) ** 2 <= 1
    hu[left | right] = -850.0
    # a trachea joining the lungs to the air above the scan: per-slice filling must still find them
    hu[18:26, 18:22, 18:] = -1000.0
    mask = lung_mask(hu)
    truth = left | right
    overlap = (mask & truth).sum() / truth.sum()
    assert overlap > 0.9 and (mask & ~body).sum() == 0
    box = foreground_box(mask)
    assert box[0].start <= 10 and box[0].stop >= 38
    assert not lung_mask(np.full(shape, 40.0)).any()
