import importlib.util

import nibabel as nib
import numpy as np
import pytest

from gvsl.data import io
from gvsl.data.io import check_label_values, check_same_grid, read_volume, write_nifti
from gvsl.errors import GVSLInputError


def save_nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def test_nifti_roundtrip_affine_and_spacing(tmp_path):
    affine = np.diag([0.7, 0.7, 1.6, 1.0])
    affine[:3, 3] = [1, 2, 3]
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    vol = read_volume(write_nifti(tmp_path / "a.nii.gz", array, affine))
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing == pytest.approx((0.7, 0.7, 1.6))


def test_trailing_singleton_axis_is_squeezed(tmp_path):
    vol = read_volume(save_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6, 1), np.float32)))
    assert vol.array.shape == (4, 5, 6)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 6, 2)])
def test_wrong_dimensionality_names_the_file(tmp_path, shape):
    path = save_nifti(tmp_path / "bad.nii.gz", np.zeros(shape, np.float32))
    with pytest.raises(GVSLInputError, match=rf"bad\.nii\.gz: expecting a 3-D volume, got {len(shape)}-D"):
        read_volume(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = save_nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GVSLInputError, match=r"cut\.nii\.gz: unreadable or truncated"):
        read_volume(path)


def test_nan_and_inf_voxels_are_refused(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3], array[0, 0, 0] = np.nan, np.inf
    with pytest.raises(GVSLInputError, match=r"nan\.nii\.gz: 2 NaN/Inf voxels"):
        read_volume(save_nifti(tmp_path / "nan.nii.gz", array))


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(GVSLInputError, match="nope.nii.gz: file not found"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.png").write_bytes(b"x")
    with pytest.raises(GVSLInputError, match="x.png: unknown volume format"):
        read_volume(tmp_path / "x.png")


def test_label_checks(tmp_path):
    image = read_volume(save_nifti(tmp_path / "img.nii.gz", np.zeros((4, 4, 4), np.float32)))
    label = read_volume(
        save_nifti(tmp_path / "lab.nii.gz", np.array([0, 205, 421, 999] * 16).reshape(4, 4, 4).astype(np.int16)),
        kind="label",
    )
    check_same_grid(image, label)
    with pytest.raises(GVSLInputError, match=r"lab\.nii\.gz: unexpected label values 421, 999"):
        check_label_values(label, [0, 205, 420])
    assert list(check_label_values(label, [0, 205, 421, 999])) == [0, 205, 421, 999]
    small = read_volume(save_nifti(tmp_path / "small.nii.gz", np.zeros((4, 4, 3), np.uint8)), kind="label")
    with pytest.raises(GVSLInputError, match=r"small\.nii\.gz: label shape \(4, 4, 3\) differs from image shape"):
        check_same_grid(image, small)
    half_voxel_shift = np.eye(4)
    half_voxel_shift[0, 3] = 0.5
    shifted = read_volume(
        save_nifti(tmp_path / "shift.nii.gz", np.zeros((4, 4, 4), np.uint8), half_voxel_shift), kind="label"
    )
    with pytest.raises(GVSLInputError, match=r"shift\.nii\.gz: label affine differs"):
        check_same_grid(image, shifted)


def test_float_labels_must_be_integers(tmp_path):
    path = save_nifti(tmp_path / "f.nii.gz", np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(GVSLInputError, match="f.nii.gz: label volume holds non-integer values"):
        read_volume(path, kind="label")
    assert (
        read_volume(save_nifti(tmp_path / "g.nii.gz", np.full((3, 3, 3), 205.0, np.float32)), kind="label").array.dtype
        == np.int64
    )


@pytest.mark.parametrize("with_origin", [True, False])
def test_nrrd_lps_to_ras_with_and_without_origin(tmp_path, with_origin):
    nrrd = pytest.importorskip("nrrd")
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.6, 1.2])}
    if with_origin:
        header["space origin"] = np.array([10.0, 20.0, 30.0])
    nrrd.write(str(tmp_path / "a.nrrd"), array, header)
    vol = read_volume(tmp_path / "a.nrrd")
    np.testing.assert_array_equal(vol.array, array)
    origin = [-10.0, -20.0, 30.0] if with_origin else [0.0, 0.0, 0.0]
    expected = np.diag([-0.5, -0.6, 1.2, 1.0])
    expected[:3, 3] = origin
    np.testing.assert_allclose(vol.affine, expected)


def test_nrrd_agrees_with_nifti_in_world_space(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    # the same voxel grid written as NIfTI (RAS) and NRRD (LPS) must give the same affine
    ras = np.array([[0.0, -0.8, 0.0, 5.0], [0.9, 0.0, 0.0, -3.0], [0.0, 0.0, 2.0, 7.0], [0, 0, 0, 1.0]])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    array = np.zeros((3, 4, 5), np.int16)
    nrrd.write(
        str(tmp_path / "a.nrrd"), array, {"space": "LPS", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}
    )
    np.testing.assert_allclose(read_volume(tmp_path / "a.nrrd").affine, ras)


def test_mha_without_itk_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        io.importlib.util, "find_spec", lambda name, *args: None if name == "itk" else real_find_spec(name, *args)
    )
    expected = r"scan\.mha: reading \.mha needs ITK.*pip install 'gvsl-kit\[itk\]'"
    with pytest.raises(GVSLInputError, match=expected):
        read_volume(tmp_path / "scan.mha")


@pytest.mark.filterwarnings("ignore:builtin type")  # ITK's SWIG bindings
def test_mha_through_itk_matches_nifti_world(tmp_path):
    itk = pytest.importorskip("itk")
    array = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)  # (i, j, k)
    image = itk.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0)))  # ITK wants (k, j, i)
    image.SetSpacing((0.5, 0.7, 1.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image.SetDirection(itk.matrix_from_array(direction))
    itk.imwrite(image, str(tmp_path / "a.mha"))
    vol = read_volume(tmp_path / "a.mha")
    np.testing.assert_allclose(vol.array, array)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag([0.5, 0.7, 1.5])
    lps[:3, 3] = [10.0, -20.0, 30.0]
    np.testing.assert_allclose(vol.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, atol=1e-6)
    # a truncated compressed MetaImage names the file
    itk.imwrite(image, str(tmp_path / "b.mha"), compression=True)
    data = (tmp_path / "b.mha").read_bytes()
    (tmp_path / "b.mha").write_bytes(data[: len(data) - 200])
    with pytest.raises(GVSLInputError, match=r"b\.mha: unreadable or truncated"):
        read_volume(tmp_path / "b.mha")
