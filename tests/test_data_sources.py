"""gvsl prepare on small hand-made copies of each source's layout, and on fake generators."""

import json
import sys
import types
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from gvsl import cli
from gvsl.data import load_prepared, prepare
from gvsl.data.preprocess import ct_window
from gvsl.data.sources import PHANTOM_COUNTS, assign_splits, scale_counts, subject_seed
from gvsl.errors import GVSLInputError

# Non-RAS, anisotropic grid (0.7 × 0.7 × 1.6 mm): axis 0 along world +z, axis 1 along -x, axis 2 along -y.
MMWHS_AFFINE = np.array([[0.0, -0.7, 0.0, 12.0], [0.0, 0.0, -1.6, 30.0], [0.7, 0.0, 0.0, -8.0], [0.0, 0.0, 0.0, 1.0]])
HU_GRADIENT = np.array([6.0, -4.0, 3.0])  # HU per mm along world x, y, z


def world_coordinates(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def save(path, array, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def write_mmwhs_case(folder, case, shape=(36, 36, 16), affine=MMWHS_AFFINE, value=500):
    """An image whose HU is linear in world position and a label blob of ``value``."""
    hu = (world_coordinates(shape, affine) @ HU_GRADIENT).astype(np.float32)
    label = np.zeros(shape, np.int16)
    label[14:22, 12:20, 6:10] = value
    save(folder / f"{case}_image.nii.gz", hu, affine)
    save(folder / f"{case}_label.nii.gz", label, affine)
    return hu, label


@pytest.fixture
def mmwhs_root(tmp_path):
    root = tmp_path / "mmwhs"
    nested = root / "MM-WHS 2017 Dataset" / "ct_train"
    for i in range(1, 5):
        write_mmwhs_case(nested, f"ct_train_100{i}")
    # ignored: MR files and macOS resource forks from the archive
    write_mmwhs_case(root / "mr_train", "mr_train_1001")
    (nested / "._ct_train_1001_image.nii.gz").write_bytes(b"\0\5\26\7")
    return root


def test_mmwhs_world_position_spacing_and_intensity(mmwhs_root, tmp_path):
    with pytest.warns(UserWarning, match=r"4 cases instead of the 60 .* \(1, 1, 2\)"):
        out = prepare("mmwhs", tmp_path / "SHC", mmwhs_root, roi_mm=(40, 40, 40))
    ds = load_prepared(out, task="SHC")
    assert ds.info.task_type == "segmentation" and len(ds.info.classes) == 7
    assert ds.info.label_values["500"] == 3 and ds.info.spacing == (1.0, 1.0, 1.0)
    assert ds.info.counts == {"train": 1, "val": 1, "test": 2}
    assert sorted(ds.manifest["id"]) == [f"ct_train_100{i}" for i in range(1, 5)]
    case = ds.load_case("ct_train_1002")
    assert case.image.shape == case.label.shape == (40, 40, 40)
    assert case.image.dtype == np.float32 and 0.0 <= case.image.min() and case.image.max() <= 1.0
    # RAS canonical 1 mm grid
    np.testing.assert_allclose(case.affine[:3, :3], np.eye(3), atol=1e-6)
    # the blob sits at the same world position as in the source file
    _src_hu, src_label = write_mmwhs_case(tmp_path / "ref", "x")
    src_centre = world_coordinates(src_label.shape, MMWHS_AFFINE)[src_label == 500].mean(0)
    out_world = world_coordinates(case.label.shape, case.affine)
    assert set(np.unique(case.label)) == {0, 3}
    np.testing.assert_allclose(out_world[case.label == 3].mean(0), src_centre, atol=0.6)
    # the image is the source's HU field, windowed, at the right world positions
    inside = case.label == 3
    expected = ct_window(out_world[inside] @ HU_GRADIENT)
    np.testing.assert_allclose(case.image[inside], expected, atol=2e-4)


def test_mmwhs_splits_are_seeded_and_stored(mmwhs_root, tmp_path):
    with pytest.warns(UserWarning):
        a = load_prepared(prepare("mmwhs", tmp_path / "a", mmwhs_root, seed=3, roi_mm=(32, 32, 32)))
    with pytest.warns(UserWarning):
        b = load_prepared(prepare("mmwhs", tmp_path / "b", mmwhs_root, seed=3, roi_mm=(32, 32, 32)))
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    assert (tmp_path / "a" / "images" / "ct_train_1001.nii.gz").read_bytes() == (
        tmp_path / "b" / "images" / "ct_train_1001.nii.gz"
    ).read_bytes()
    ids = [f"case{i:02d}" for i in range(60)]
    first = assign_splits(ids, (15, 5, 40), seed=0)
    assert first == assign_splits(list(reversed(ids)), (15, 5, 40), seed=0)
    assert first != assign_splits(ids, (15, 5, 40), seed=1)
    assert sorted(pd.Series(first).value_counts().items()) == [("test", 40), ("train", 15), ("val", 5)]


def test_scale_counts():
    assert scale_counts((15, 5, 40), 60, what="x") == (15, 5, 40)
    with pytest.warns(UserWarning, match="x: 20 cases"):
        assert scale_counts((15, 5, 40), 20, what="x") == (5, 2, 13)
    with pytest.warns(UserWarning):
        assert sum(scale_counts((1000, 400, 600), 7, what="x")) == 7
    with pytest.raises(GVSLInputError, match="2 cases cannot fill"):
        scale_counts((15, 5, 40), 2, what="x")


@pytest.mark.filterwarnings("ignore:.*cases instead of")
def test_mmwhs_unknown_label_value_is_listed(tmp_path):
    root = tmp_path / "mmwhs"
    for i, value in enumerate((500, 421, 500), start=1):
        write_mmwhs_case(root, f"ct_train_100{i}", value=value)
    with pytest.raises(GVSLInputError, match=r"ct_train_1002_label\.nii\.gz: unexpected label values 421"):
        prepare("mmwhs", tmp_path / "out", root, roi_mm=(32, 32, 32))


def test_failure_midway_leaves_nothing(mmwhs_root, tmp_path):
    image = next(mmwhs_root.rglob("ct_train_1004_image.nii.gz"))
    image.write_bytes(image.read_bytes()[:200])
    out = tmp_path / "SHC"
    with pytest.warns(UserWarning), pytest.raises(GVSLInputError, match="ct_train_1004_image.nii.gz: unreadable"):
        prepare("mmwhs", out, mmwhs_root, roi_mm=(32, 32, 32))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mmwhs"]  # no partial sibling either
    # an existing output survives a failed --overwrite run and is refused without it
    out.mkdir()
    (out / "old.txt").write_text("keep")
    with pytest.raises(GVSLInputError, match="not empty .*--overwrite"):
        prepare("mmwhs", out, mmwhs_root)
    with pytest.warns(UserWarning), pytest.raises(GVSLInputError):
        prepare("mmwhs", out, mmwhs_root, roi_mm=(32, 32, 32), overwrite=True)
    assert (out / "old.txt").read_text() == "keep"
    image.unlink()
    (image.parent / "ct_train_1004_label.nii.gz").unlink()
    with pytest.warns(UserWarning, match="3 cases"):
        prepare("mmwhs", out, mmwhs_root, roi_mm=(32, 32, 32), overwrite=True)
    assert not (out / "old.txt").exists() and (out / "manifest.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHC", "mmwhs"]


def test_asoca_nrrd_with_and_without_origin(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    root = tmp_path / "ASOCA"
    for i, group in enumerate(["Normal", "Normal", "Diseased"], start=1):
        hu = np.full((30, 30, 20), 40, np.int16)
        mask = np.zeros((30, 30, 20), np.uint8)
        mask[10:20, 12:14, 5:15] = 1
        header = {"space": "left-posterior-superior", "space directions": np.diag([0.8, 0.8, 1.2])}
        if i != 2:
            header["space origin"] = np.array([-100.0, 50.0, 20.0])
        for folder, data in (("CTCA", hu), ("Annotations", mask)):
            (root / group / folder).mkdir(parents=True, exist_ok=True)
            nrrd.write(str(root / group / folder / f"{group}_{i}.nrrd"), data, header)
    (root / "Testset" / "CTCA").mkdir(parents=True)
    nrrd.write(str(root / "Testset" / "CTCA" / "Test_1.nrrd"), np.zeros((4, 4, 4), np.int16))
    with pytest.warns(UserWarning) as record:
        ds = load_prepared(prepare("asoca", tmp_path / "SAC", root, roi_mm=(32, 32, 32)))
    assert any("without a label" in str(w.message) and "Test_1" in str(w.message) for w in record)
    assert ds.info.task == "SAC" and ds.info.classes == ("coronary_artery",)
    assert ds.info.counts == {"train": 1, "val": 1, "test": 1}
    for case_id in ds.manifest["id"]:
        case = ds.load_case(case_id)
        assert set(np.unique(case.label)) == {0, 1} and case.label.shape == (32, 32, 32)
        # inside the scan the image is the window of 40 HU
        assert np.isclose(case.image[case.label == 1], (40 + 1024) / 2048).all()
    assert set(ds.manifest["source_label"].str.split("/").str[1]) == {"Annotations"}


def thorax_hu(shape, seed):
    """Body ellipse with two lungs (HU); one lung holds a denser patch when ``seed`` is odd."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    hu = np.full(shape, -1000.0, np.float32)
    body = ((x - shape[0] / 2) / (0.42 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.38 * shape[1])) ** 2 <= 1
    hu[body] = 40.0
    for cx in (0.3, 0.7):
        hu[
            ((x - cx * shape[0]) / (0.13 * shape[0])) ** 2
            + ((y - shape[1] / 2) / (0.2 * shape[1])) ** 2
            + ((z - shape[2] / 2) / (0.35 * shape[2])) ** 2
            <= 1
        ] = -850.0
    if seed % 2:
        hu[int(0.28 * shape[0]) : int(0.32 * shape[0]), shape[1] // 2 - 2 : shape[1] // 2 + 2, shape[2] // 2] = -300.0
    return hu


def write_stoic(root, ids, rows):
    (root / "data" / "mha").mkdir(parents=True)
    (root / "metadata").mkdir()
    pd.DataFrame({"PatientID": rows, "probCOVID": [r % 2 for r in rows], "probSevere": [0] * len(rows)}).to_csv(
        root / "metadata" / "reference.csv", index=False
    )
    return [root / "data" / "mha" / f"{i}.mha" for i in ids]


def test_stoic_missing_reference_row_names_the_case(tmp_path):
    # Checked before any volume is read, so the files need not be valid images.
    for path in write_stoic(tmp_path / "stoic", [1, 2, 3], rows=[1, 3]):
        path.write_bytes(b"not read")
    with pytest.raises(GVSLInputError, match=r"2\.mha: no row for PatientID 2 in .*reference\.csv"):
        prepare("stoic", tmp_path / "CCC", tmp_path / "stoic")


@pytest.mark.filterwarnings("ignore:builtin type")  # ITK's SWIG bindings
def test_stoic_mha_lung_roi_and_targets(tmp_path):
    itk = pytest.importorskip("itk")
    paths = write_stoic(tmp_path / "stoic", [11, 12, 13, 14], rows=[11, 12, 13, 14, 99])
    for i, path in enumerate(paths):
        image = itk.image_from_array(np.ascontiguousarray(thorax_hu((40, 36, 24), i).transpose(2, 1, 0)))
        image.SetSpacing((8.0, 8.0, 12.0))
        itk.imwrite(image, str(path))
    with pytest.warns(UserWarning, match="4 cases"):
        ds = load_prepared(prepare("stoic", tmp_path / "CCC", tmp_path / "stoic", spacing=8, roi_mm=(320, 256, 320)))
    assert ds.info.task_type == "classification" and ds.info.generator["target"] == "probCOVID"
    assert dict(zip(ds.manifest["id"], ds.manifest["target"])) == {"11": 1, "12": 0, "13": 1, "14": 0}
    assert (ds.manifest["label"] == "").all()
    case = ds.load_case("12")
    assert case.image.shape == (40, 32, 40) and case.label is None and case.target == 0


def write_msd(root, n_train=5):
    task = root / "Task09_Spleen"
    training = []
    for i in range(n_train):
        image = np.random.default_rng(i).normal(0, 100, (12, 12, 8)).astype(np.float32)
        label = (np.arange(12 * 12 * 8).reshape(12, 12, 8) % 7 == 0).astype(np.uint8)
        save(task / "imagesTr" / f"spleen_{i}.nii.gz", image, np.diag([2.0, 2.0, 3.0, 1.0]))
        save(task / "labelsTr" / f"spleen_{i}.nii.gz", label, np.diag([2.0, 2.0, 3.0, 1.0]))
        training.append({"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"})
    save(task / "imagesTs" / "spleen_99.nii.gz", np.zeros((12, 12, 8), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    description = {
        "name": "Spleen",
        "description": "",
        "reference": "",
        "licence": "",
        "release": "",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": n_train,
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/spleen_99.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(description))
    return task


def test_msd_segmentation_and_pretrain(tmp_path):
    write_msd(tmp_path / "msd")
    ds = load_prepared(prepare("msd", tmp_path / "MSD", tmp_path / "msd", spacing=(2, 2, 3)))
    assert ds.info.task == "MSD" and ds.info.classes == ("spleen",)
    assert ds.info.counts == {"train": 3, "val": 1, "test": 1} and ds.info.window["kind"] == "ct"
    case = ds.load_case("spleen_0")
    assert case.image.shape == (12, 12, 8) and set(np.unique(case.label)) == {0, 1}
    pre = load_prepared(prepare("msd", tmp_path / "pre", tmp_path / "msd", task="pretrain", spacing=(2, 2, 3)))
    assert pre.info.task_type == "pretrain" and pre.info.counts == {"train": 6}
    assert (pre.manifest["label"] == "").all()


def test_msd_missing_listed_file(tmp_path):
    task = write_msd(tmp_path / "msd")
    (task / "labelsTr" / "spleen_3.nii.gz").unlink()
    with pytest.raises(GVSLInputError, match=r"dataset\.json: lists labelsTr/spleen_3\.nii\.gz, which is not there"):
        prepare("msd", tmp_path / "MSD", tmp_path / "msd")


def test_candi_labels_mapped_to_consecutive_ids(tmp_path):
    root = tmp_path / "CANDI"
    values = [(2, 41, 17), (2, 41, 53), (2, 41, 17)]
    for i, (a, b, c) in enumerate(values):
        image = np.random.default_rng(i).random((50, 50, 40)).astype(np.float32) * 300
        label = np.zeros((50, 50, 40), np.int16)
        label[10:25, 10:40, 8:30], label[25:40, 10:40, 8:30], label[20:30, 20:30, 12:16] = a, b, c
        save(root / "HC" / f"HC_00{i}" / f"HC_00{i}_procimg.nii.gz", image, np.diag([4.0, 4.0, 4.0, 1.0]))
        save(root / "HC" / f"HC_00{i}" / f"HC_00{i}_seg.nii.gz", label, np.diag([4.0, 4.0, 4.0, 1.0]))
    with pytest.warns(UserWarning, match="3 cases instead of the 103"):
        ds = load_prepared(prepare("candi", tmp_path / "SBM", root, spacing=4))
    assert ds.info.label_values == {"2": 1, "17": 2, "41": 3, "53": 4}
    assert ds.info.classes == (
        "Left-Cerebral-White-Matter",
        "Left-Hippocampus",
        "Right-Cerebral-White-Matter",
        "Right-Hippocampus",
    )
    case = ds.load_case("HC_001")
    assert case.image.shape == (40, 40, 32)  # 160 × 160 × 128 mm at 4 mm
    assert set(np.unique(case.label)) == {0, 1, 3, 4} and case.image.min() == 0 and case.image.max() == 1


def test_folder_pretrain_mr_minmax(tmp_path):
    root = tmp_path / "scans"
    for i in range(3):
        save(
            root / f"sub{i}" / f"scan{i}.nii.gz",
            np.random.default_rng(i).random((10, 10, 10)) * 500 + 20,
            np.diag([1.5, 1.5, 1.5, 1.0]),
        )
    ds = load_prepared(prepare("folder", tmp_path / "pre", root, modality="mr", spacing=1.5), task="pretrain")
    assert list(ds.manifest["id"]) == ["scan0", "scan1", "scan2"] and ds.info.window["kind"] == "minmax"
    image = ds.load_case("scan1").image
    assert image.min() == 0.0 and image.max() == 1.0


def test_bad_requests():
    with pytest.raises(GVSLInputError, match="source 'bogus' is not one of"):
        prepare("bogus", "x")
    with pytest.raises(GVSLInputError, match="mmwhs needs --root"):
        prepare("mmwhs", "x")
    with pytest.raises(GVSLInputError, match="prepares task SHC, not 'CCC'"):
        prepare("mmwhs", "x", "y", task="CCC")
    with pytest.raises(GVSLInputError, match="reads no --root"):
        prepare("phantom-ct", "x", "y")


# ------------------------------------------------------------------------ generated sources (fake generators)


@dataclass
class FakePhantomSubject:
    image_hu: np.ndarray
    heart: np.ndarray
    coronary: np.ndarray
    opacity: bool
    spacing: tuple
    heart_box: tuple
    lung_box: tuple


def fake_phantom_module():
    """Stand-in for gvsl.data.cohorts.phantom with its API: a thorax, a 7-part heart, a coronary ring."""

    def generate_subject(seed, shape=(64, 64, 64), spacing=(5.0, 5.0, 5.0), opacity=None):
        rng = np.random.default_rng(seed)
        opacity = bool(rng.integers(2)) if opacity is None else opacity
        hu = thorax_hu(shape, int(opacity)) + rng.normal(0, 5, shape).astype(np.float32)
        x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        centre = np.array(shape) / 2 + rng.integers(-2, 3, 3)
        r = np.sqrt(((x - centre[0]) / 8) ** 2 + ((y - centre[1]) / 6) ** 2 + ((z - centre[2]) / 6) ** 2)
        heart = np.zeros(shape, np.uint8)
        inside = r <= 1
        sector = ((np.arctan2(y - centre[1], x - centre[0]) + np.pi) / (2 * np.pi) * 7).astype(int) % 7
        heart[inside] = 1 + sector[inside]
        hu[inside] = 60.0
        coronary = ((r > 0.95) & (r <= 1.15) & (np.abs(z - centre[2]) < 2)).astype(np.uint8)
        lung_box = ndimage.find_objects(((hu > -900) & (hu < -500)).astype(np.uint8))[0]
        return FakePhantomSubject(hu, heart, coronary, opacity, tuple(spacing), (), lung_box)

    return types.SimpleNamespace(
        HEART_CLASSES=tuple(
            "myocardium left_atrium left_ventricle right_atrium right_ventricle ascending_aorta "
            "pulmonary_artery".split()
        ),
        generate_subject=generate_subject,
    )


def fake_brain_module():
    def generate_subject(seed, shape=(48, 48, 40), spacing=(4.0, 4.0, 4.0)):
        x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        c = np.array(shape) / 2 + np.random.default_rng(seed).integers(-2, 3, 3)
        r = np.sqrt(((x - c[0]) / 16) ** 2 + ((y - c[1]) / 19) ** 2 + ((z - c[2]) / 14) ** 2)
        label = np.select([r < 0.3, r < 0.7, r < 1.0], [1, 3, 2], 0).astype(np.uint8)
        image = np.select([r < 0.3, r < 0.7, r < 1.0], [0.2, 0.9, 0.6], 0.0).astype(np.float32)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = -np.array(shape) * spacing / 2
        return types.SimpleNamespace(image=image, label=label, spacing=spacing, affine=affine)

    return types.SimpleNamespace(
        BRAIN_CLASSES=("csf", "grey_matter", "white_matter"), generate_subject=generate_subject
    )


@pytest.fixture
def fake_generators(monkeypatch):
    monkeypatch.setitem(sys.modules, "gvsl.data.cohorts.phantom", fake_phantom_module())
    monkeypatch.setitem(sys.modules, "gvsl.data.cohorts.brain", fake_brain_module())


def test_phantom_ct_builds_four_tasks(fake_generators, tmp_path):
    out = prepare("phantom-ct", tmp_path / "prepared", shape=(40, 40, 40), subjects=6)
    datasets = {task: load_prepared(out / task, task=task) for task in ("pretrain", "SHC", "SAC", "CCC")}
    assert datasets["pretrain"].info.counts == {"train": 6}
    assert datasets["SHC"].info.counts == {"train": 1, "val": 1, "test": 4}  # (8, 4, 40) scaled to 6
    shc = datasets["SHC"].load_case(datasets["SHC"].ids("train")[0])
    assert shc.image.shape == (40, 40, 40) and set(np.unique(shc.label)) == set(range(8))  # 200 mm at 5 mm
    # SHC and SAC ROIs are placed without labels: one fixed box, so every case has the same affine
    for task in ("SHC", "SAC"):
        affines = {datasets[task].load_case(i).affine.tobytes() for i in datasets[task].manifest["id"]}
        assert len(affines) == 1 and "no labels" in datasets[task].info.generator["roi"]
    sac = datasets["SAC"].load_case(datasets["SAC"].ids("test")[0])
    assert set(np.unique(sac.label)) == {0, 1}
    ccc = datasets["CCC"]
    for split in ("train", "val", "test"):  # classes alternate inside each split
        targets = list(ccc.split(split)["target"])
        assert abs(sum(targets) * 2 - len(targets)) <= 1
    assert ccc.load_case(ccc.ids("val")[0]).image.shape == (64, 48, 56)  # 320 × 240 × 280 mm at 5 mm
    seeds = [s for ds in datasets.values() for s in ds.manifest["seed"]]
    assert len(seeds) == len(set(seeds))  # disjoint subjects across cohorts
    # deterministic from the seed
    again = prepare("phantom-ct", tmp_path / "again", shape=(40, 40, 40), subjects=6, task="SHC")
    assert (again / "manifest.csv").read_text() == (out / "SHC" / "manifest.csv").read_text()
    first_image = (out / "SHC" / "images" / "shc_0000.nii.gz").read_bytes()
    assert (again / "images" / "shc_0000.nii.gz").read_bytes() == first_image


def test_default_cohort_sizes_and_seeds():
    assert PHANTOM_COUNTS == {
        "pretrain": (48, 0, 0),
        "SHC": (8, 4, 40),
        "SAC": (8, 4, 20),
        "CCC": (24, 12, 48),
        "SBM": (8, 4, 43),
    }
    assert subject_seed(0, "SHC", 3) != subject_seed(0, "SAC", 3) != subject_seed(1, "SHC", 3)
    with pytest.raises(GVSLInputError):
        subject_seed(-1, "SHC", 0)


def test_mni_brain_sbm(fake_generators, tmp_path):
    ds = load_prepared(prepare("mni-brain", tmp_path / "SBM", subjects=4), task="SBM")
    assert ds.info.classes == ("csf", "grey_matter", "white_matter") and ds.info.spacing == (4.0, 4.0, 4.0)
    case = ds.load_case(ds.ids("train")[0])
    assert case.image.shape == (42, 51, 42) and set(np.unique(case.label)) == {0, 1, 2, 3}  # 168×204×168 mm
    assert case.image.min() == 0.0 and case.image.max() == 1.0


# ------------------------------------------------------------------------------------------------- CLI


def _cli(monkeypatch, capsys, argv):
    monkeypatch.setitem(cli.COMMANDS, "prepare", ("gvsl.data.prepare", "prepare datasets"))
    code = cli.main(["prepare", *argv])
    return code, capsys.readouterr()


def _break(kind, root):
    """Damage case ct_train_1001 of a three-case MM-WHS folder; return the file the error must name."""
    image, label = root / "ct_train_1001_image.nii.gz", root / "ct_train_1001_label.nii.gz"
    if kind == "truncated":
        image.write_bytes(image.read_bytes()[:300])
        return image
    if kind == "2-D":
        save(image, np.zeros((20, 20), np.float32), np.eye(4))
        return image
    if kind == "NaN":
        hu = np.zeros((36, 36, 16), np.float32)
        hu[3, 4, 5] = np.nan
        save(image, hu, MMWHS_AFFINE)
        return image
    if kind == "shape":
        save(label, np.zeros((36, 36, 15), np.int16), MMWHS_AFFINE)
        return label
    if kind == "values":
        data = np.asanyarray(nib.load(str(label)).dataobj).copy()
        data[0, 0, :3] = [7, 9, 1000]
        save(label, data, MMWHS_AFFINE)
        return label
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "unreadable or truncated"),
        ("2-D", "expecting a 3-D volume, got 2-D"),
        ("NaN", "1 NaN/Inf voxels"),
        ("shape", "label shape (36, 36, 15) differs from image shape"),
        ("values", "unexpected label values 7, 9, 1000"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(monkeypatch, capsys, tmp_path, kind, message):
    root = tmp_path / "mmwhs"
    for i in range(1, 4):
        write_mmwhs_case(root, f"ct_train_100{i}")
    bad = _break(kind, root)
    code, captured = _cli(
        monkeypatch,
        capsys,
        ["--source", "mmwhs", "--root", str(root), "--out", str(tmp_path / "out"), "--roi-mm", "32", "32", "32"],
    )
    # three cases instead of the paper's 60: one warning line, then the error line
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 2, captured.err
    assert lines[0].startswith("gvsl prepare: warning: ") and "3 cases instead of the 60" in lines[0]
    assert lines[1].startswith(f"gvsl prepare: error: {bad}: ") and message in lines[1]
    assert not (tmp_path / "out").exists()


def test_cli_empty_folder_and_success(monkeypatch, capsys, tmp_path, fake_generators):
    (tmp_path / "empty").mkdir()
    code, captured = _cli(
        monkeypatch, capsys, ["--source", "mmwhs", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
    )
    assert code == 2
    assert captured.err.strip() == (
        f"gvsl prepare: error: {tmp_path / 'empty'}: no MM-WHS CT images found "
        r"(looked for files named /(ct_(?:train|test)_\d+)_image\.nii(?:\.gz)?/)"
    )
    code, captured = _cli(
        monkeypatch, capsys, ["--source", "mni-brain", "--out", str(tmp_path / "sbm"), "--subjects", "3", "--seed", "5"]
    )
    assert code == 0 and "prepared mni-brain" in captured.out
    assert load_prepared(tmp_path / "sbm").info.generator["seed"] == 5
