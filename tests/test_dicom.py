"""DICOM series in the folder source (gvsl.data.dicom): grouping, ordering, HU, RAS affine, and the one-line errors.

The series are written here with pydicom, with known voxels and geometry; pydicom's own test files are the
real DICOM (CT_small.dcm, and the small CT series of its DICOMDIR test tree).
"""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from gvsl import cli
from gvsl.data import load_prepared, prepare
from gvsl.data.dicom import find_dicom_series, read_dicom_series
from gvsl.errors import GVSLInputError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows run patient-left, columns posterior: normal superior
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # rows run left, columns inferior: normal posterior
PIXEL_SPACING = (0.8, 0.7)  # between rows, between columns (DICOM order)
SLICES, ROWS, COLUMNS = 5, 6, 7
SLOPE, INTERCEPT = 2.0, -1024.0


def known_hu() -> np.ndarray:
    """(slice, row, column) HU, each voxel distinct, stored as raw = (HU - INTERCEPT) / SLOPE."""
    k, r, c = np.meshgrid(np.arange(SLICES), np.arange(ROWS), np.arange(COLUMNS), indexing="ij")
    return SLOPE * (100 * k + 10 * r + c) + INTERCEPT


def write_slice(
    path: Path,
    hu: np.ndarray,
    position,
    *,
    orientation=AXIAL,
    series_uid: str,
    instance: int,
    modality: str = "CT",
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    transfer_syntax=None,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageType = modality, list(image_type)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.3", series_uid, instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in PIXEL_SPACING]
    ds.SliceThickness = "2.5"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = f"{SLOPE:g}", f"{INTERCEPT:g}"
    raw = np.round((hu - INTERCEPT) / SLOPE).astype("<i2").tobytes()
    ds.PixelData = encapsulate([raw]) if transfer_syntax else raw
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: Path, positions, *, hu=None, seed: int = 0, **kwargs) -> list[Path]:
    """One file per slice; slice k holds ``hu[k]`` at ``positions[k]``. File names and instance numbers are
    shuffled, so that neither gives the order."""
    hu = known_hu() if hu is None else hu
    kwargs.setdefault("series_uid", generate_uid())
    rng = np.random.default_rng(seed)
    names, instances = rng.permutation(len(positions)), rng.permutation(len(positions)) + 1
    paths = []
    for k, position in enumerate(positions):
        paths.append(folder / f"IM{names[k]:04d}")
        write_slice(paths[-1], hu[k], position, instance=int(instances[k]), **kwargs)
    return paths


def axial_positions(origin=(-100.0, -120.0, 30.0), step=2.5, count=SLICES):
    return [(origin[0], origin[1], origin[2] + step * k) for k in range(count)]


#: the RAS+ affine of the axial series: LPS x, y negated; array axes (column, row, slice)
AXIAL_RAS = np.array([[-0.7, 0, 0, 100.0], [0, -0.8, 0, 120.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def test_series_reads_in_hu_on_the_ras_grid_whatever_the_file_order(tmp_path):
    write_series(tmp_path / "scan", axial_positions())
    volume = read_dicom_series(sorted((tmp_path / "scan").iterdir()))
    np.testing.assert_allclose(volume.affine, AXIAL_RAS, atol=1e-6)
    assert volume.array.dtype == np.float32 and volume.array.shape == (COLUMNS, ROWS, SLICES)
    np.testing.assert_array_equal(volume.array, known_hu().transpose(2, 1, 0))  # [i, j, k] = hu[k, row j, col i]
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5))


def test_order_comes_from_the_position_along_the_normal_not_z(tmp_path):
    # A coronal stack: every slice has the same z, the normal points posterior; written back to front.
    positions = [(-100.0, -50.0 + 3.0 * k, 40.0) for k in range(SLICES)]
    paths = write_series(tmp_path / "cor", positions[::-1], hu=known_hu()[::-1], orientation=CORONAL)
    volume = read_dicom_series(paths)
    expected = np.array([[-0.7, 0, 0, 100.0], [0, 0, -3.0, 50.0], [0, -0.8, 0, 40.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-6)
    np.testing.assert_array_equal(volume.array, known_hu().transpose(2, 1, 0))


def test_folder_source_prepares_a_series_at_its_world_position_and_window(tmp_path):
    write_series(tmp_path / "root" / "patient1" / "CT", axial_positions())
    out = prepare(
        "folder", tmp_path / "out", tmp_path / "root", modality="ct", spacing=[0.7, 0.8, 2.5], window_offset=1000
    )
    ds = load_prepared(out, task="pretrain")
    assert list(ds.manifest["id"]) == ["patient1_CT"]
    assert ds.manifest["source_image"][0] == "patient1/CT"
    case = ds.load_case("patient1_CT")
    # canonical RAS+: the first two axes flipped, so the origin is the voxel at the far column and row
    canonical = np.array(
        [
            [0.7, 0, 0, 100.0 - 0.7 * (COLUMNS - 1)],
            [0, 0.8, 0, 120.0 - 0.8 * (ROWS - 1)],
            [0, 0, 2.5, 30.0],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_allclose(case.affine, canonical, atol=1e-4)
    hu = known_hu().transpose(2, 1, 0)[::-1, ::-1, :]
    np.testing.assert_allclose(case.image, np.clip(hu + 1000, 0, 2048) / 2048, atol=1e-6)
    assert ds.info.window["offset"] == 1000


def test_pipeline_prepare_stage_reads_a_dicom_folder(tmp_path):
    # params.yaml: prepare.tasks.pretrain: {source: folder, root: …} (the paper profile's pre-training data)
    from gvsl.pipeline.stage_prepare import prepare_stage

    root = tmp_path / "pretrain"  # the series' files straight in --root: the case is named after the folder
    write_series(root, axial_positions())
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["prepare"]["tasks"]["pretrain"] = {"source": "folder", "root": str(root), "spacing": 2.5}
    ds = load_prepared(prepare_stage("pretrain", params, build=tmp_path / "build"), task="pretrain")
    assert list(ds.manifest["id"]) == ["pretrain"] and ds.manifest["source_image"][0] == "."
    assert ds.load_case("pretrain").image.shape == (2, 2, 5)  # 7 × 0.7, 6 × 0.8, 5 × 2.5 mm at 2.5 mm


def test_several_series_in_one_folder_are_one_case_each(tmp_path):
    folder = tmp_path / "root" / "study"
    folder.mkdir(parents=True)
    for uid, step in (("1.2.3.4.1", 2.5), ("1.2.3.4.2", -3.0)):  # both series' files in one folder
        for path in write_series(tmp_path / uid, axial_positions(step=step), series_uid=uid):
            path.rename(folder / f"{uid}_{path.name}")
    series, skipped = find_dicom_series(sorted(folder.iterdir()), tmp_path / "root", "ct")
    assert sorted(s.name for s in series) == ["study_1.2.3.4.1", "study_1.2.3.4.2"] and not skipped
    ds = load_prepared(prepare("folder", tmp_path / "out", tmp_path / "root"), task="pretrain")
    assert sorted(ds.manifest["source_series"]) == ["1.2.3.4.1", "1.2.3.4.2"]


def test_what_is_not_a_volume_is_skipped_with_one_warning(tmp_path):
    root = tmp_path / "root"
    write_series(root / "ct", axial_positions())
    write_series(root / "scout", [(0, 0, 0), (0, 0, 5)], image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_series(root / "pet", axial_positions(), modality="PT")
    write_series(root / "one", axial_positions(count=1))
    (root / "notes.txt").write_text("scanned 2024\n")
    report = Dataset()  # a DICOM object without pixels, as DICOMDIRs and structured reports are
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID = generate_uid()
    report.Modality, report.SeriesInstanceUID = "SR", generate_uid()
    report.save_as(root / "ct" / "REPORT", enforce_file_format=True)
    with pytest.warns(UserWarning) as caught:
        ds = load_prepared(prepare("folder", tmp_path / "out", root, modality="ct"), task="pretrain")
    assert list(ds.manifest["id"]) == ["ct"]
    (message,) = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert "\n" not in message and message.startswith(f"{root}: skipping what is not a CT volume: ")
    for part in (
        "not DICOM: 1 (notes.txt)",
        "DICOM without an image (Enhanced SR Storage): 1 (ct/REPORT)",
        "localizer series: 1 (scout, 2 files)",
        "series of Modality PT, not CT: 1 (pet, 5 files)",
        "single-image series: 1 (one/IM0000)",
    ):
        assert part in message


def test_dicom_and_volume_files_mix_in_one_folder(tmp_path):
    import nibabel as nib

    root = tmp_path / "root"
    write_series(root / "series", axial_positions())
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 40, np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), str(root / "vol.nii.gz"))
    ds = load_prepared(prepare("folder", tmp_path / "out", root, spacing=2.0), task="pretrain")
    assert list(ds.manifest["id"]) == ["series", "vol"]
    assert ds.manifest.set_index("id")["source_image"].to_dict() == {"series": "series", "vol": "vol.nii.gz"}


def _break(kind: str, folder: Path) -> tuple[str, str]:
    """Write a broken series into ``folder``; return the file name the error must name and its message."""
    positions = axial_positions()
    if kind == "tilt":  # a 15° gantry tilt: each slice moves 0.67 mm anterior-posterior along the table
        positions = [(x, y + k * 2.5 * np.tan(np.radians(15)), z) for k, (x, y, z) in enumerate(positions)]
        return _one(folder, positions, 4), "leave the slice normal by 2.68 mm (15.0° off row × column: gantry tilt"
    if kind == "uneven":
        positions = [
            (x, y, z)
            for x, y, z in ((-100, -120, 0), (-100, -120, 2.5), (-100, -120, 5), (-100, -120, 8), (-100, -120, 10.5))
        ]
        return _one(folder, positions, 3), "uneven slice spacing in series 1.2.9: steps from 2.5 to 3 mm"
    if kind == "missing":
        return _one(folder, positions[:2] + positions[3:], 2), "1 missing slice(s) in series 1.2.9: a gap of 5 mm"
    if kind == "duplicate":
        return _one(folder, [*positions[:4], positions[3]], None), "two slices at one position (37.500 mm along"
    if kind == "orientation":  # the last file (in name order) tilted about x: the series reads it after the first
        odd = sorted(write_series(folder, positions, series_uid="1.2.9"))[-1]
        ds = pydicom.dcmread(odd)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
        ds.save_as(odd)
        return odd.name, "ImageOrientationPatient (1.0, 0.0, 0.0, 0.0, 0.8, 0.6) differs from (1.0, 0.0, 0.0, 0.0, 1.0"
    if kind == "junk":
        write_series(folder, positions, series_uid="1.2.9")
        (folder / "IM0099.dcm").write_bytes(b"\x00" * 200 + b"not an image")
        return "IM0099.dcm", "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
    if kind == "truncated":
        paths = write_series(folder, positions, series_uid="1.2.9")
        paths[1].write_bytes(paths[1].read_bytes()[:-20])
        return paths[1].name, "cannot decode the pixel data (ValueError: The number of bytes of pixel data is less"
    if kind == "transfer syntax":
        paths = write_series(folder, positions, series_uid="1.2.9", transfer_syntax=JPEGLSLossless)
        return sorted(paths)[0].name, "transfer syntax JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) "
    raise AssertionError(kind)


def _one(folder: Path, positions, bad: int | None) -> str:
    """The series at ``positions``; the name of the file of slice ``bad`` (None: only the message is checked)."""
    paths = write_series(folder, positions, hu=known_hu()[: len(positions)], series_uid="1.2.9")
    return "" if bad is None else paths[bad].name


BAD = ["tilt", "uneven", "missing", "duplicate", "orientation", "junk", "truncated", "transfer syntax"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_series_is_one_line_naming_the_file(tmp_path, kind):
    if kind == "transfer syntax":
        from pydicom.pixels import get_decoder

        if get_decoder(JPEGLSLossless).is_available:
            pytest.skip("a JPEG-LS plugin is installed here")
    name, message = _break(kind, tmp_path / "root" / "scan")
    with pytest.raises(GVSLInputError) as caught:
        prepare("folder", tmp_path / "out", tmp_path / "root")
    text = str(caught.value)
    assert "\n" not in text and message in text, text
    assert text.startswith(str(tmp_path / "root" / "scan" / name)), text
    assert not (tmp_path / "out").exists()


def test_cli_bad_series_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    _break("missing", tmp_path / "root" / "scan")
    monkeypatch.setitem(cli.COMMANDS, "prepare", ("gvsl.data.prepare", "prepare datasets"))
    code = cli.main(["prepare", "--source", "folder", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "missing slice(s)" in lines[0], lines


def test_tilt_tolerance_is_a_tenth_of_a_pixel_across_the_stack(tmp_path):
    # 0.05 mm of drift over the stack (positions rounded by a scanner) is kept; 0.1 mm (> 0.07 mm) is not
    for drift, ok in ((0.05, True), (0.1, False)):
        positions = [(x, y + drift * k / (SLICES - 1), z) for k, (x, y, z) in enumerate(axial_positions())]
        paths = write_series(tmp_path / str(drift), positions)
        if ok:
            read_dicom_series(paths)
        else:
            with pytest.raises(GVSLInputError, match="gantry tilt"):
                read_dicom_series(paths)


# --- real DICOM shipped with pydicom ---------------------------------------------------------------------------

DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


def test_pydicom_ct_small_single_slice():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    volume = read_dicom_series([path])
    assert volume.array.shape == (128, 128, 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], ds.pixel_array.T.astype(np.float32) - 1024)
    expected = np.array(
        [[-0.661468, 0, 0, 158.135803], [0, -0.661468, 0, 179.035797], [0, 0, 5.0, -75.699997], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(volume.affine, expected, atol=1e-5)


def test_pydicom_rle_and_jpeg_2000_read_as_uncompressed():
    plain = read_dicom_series([get_testdata_file("MR_small.dcm")])
    rle = read_dicom_series([get_testdata_file("MR_small_RLE.dcm")])  # pydicom's own RLE decoder
    np.testing.assert_array_equal(plain.array, rle.array)
    np.testing.assert_allclose(plain.affine, rle.affine)
    try:
        import PIL  # noqa: F401  (JPEG 2000 through Pillow: in the kit's locked environment)
    except ImportError:
        return
    np.testing.assert_array_equal(
        plain.array, read_dicom_series([get_testdata_file("MR_small_jp2klossless.dcm")]).array
    )


def test_pydicom_ct_series_sorted_by_position_with_its_localizer_skipped(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(DICOMDIR_TESTS / "98892001", root)  # CT5N: 5 slices; CT2N: a two-view localizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series, skipped = find_dicom_series([p for p in root.rglob("*") if p.is_file()], root, "ct")
    assert skipped == [("CT2N, 2 files", "localizer series")] and not caught
    (ct,) = series
    # InstanceNumber 6..10 runs from z = 8.76 down to -1.24: the stack starts at the lowest z
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in ct.files]
    assert z == sorted(z) and ct.name == "CT5N" and ct.shape == (16, 16, 5)
    expected = np.array([[-0.488281, 0, 0, 72.199997], [0, -0.488281, 0, 143.0], [0, 0, 2.5, -1.2375], [0, 0, 0, 1]])
    np.testing.assert_allclose(ct.affine, expected, atol=1e-5)
    volume = ct.read()
    lowest = pydicom.dcmread(ct.files[0])
    np.testing.assert_array_equal(volume.array[:, :, 0], lowest.pixel_array.T.astype(np.float32) - 1024)
    with pytest.warns(UserWarning, match="localizer series: 1 \\(CT2N, 2 files\\)"):
        ds = load_prepared(prepare("folder", tmp_path / "out", root, spacing=2.5), task="pretrain")
    assert list(ds.manifest["id"]) == ["CT5N"]


def test_pydicom_ct_series_with_missing_slices(tmp_path):
    shutil.copytree(DICOMDIR_TESTS / "77654033" / "CT2", tmp_path / "CT2")  # slices 18, 180, 181, 182
    with pytest.raises(
        GVSLInputError,
        match="161 missing slice\\(s\\) in series .*: a gap of 202 mm after 17106 where slices are 1.25 mm apart",
    ):
        read_dicom_series(sorted((tmp_path / "CT2").iterdir()))
