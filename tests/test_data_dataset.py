import json

import numpy as np
import pandas as pd
import pytest

from gvsl.data.dataset import DatasetInfo, DatasetWriter, atomic_output, load_prepared
from gvsl.errors import GVSLInputError

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_segmentation(root, splits=("train", "train", "val", "test")):
    writer = DatasetWriter(root, "SHC")
    for i, split in enumerate(splits):
        image = np.full((4, 5, 6), i / 10, np.float32)
        label = np.zeros((4, 5, 6), np.uint8)
        label[1, 2, 3] = i % 8
        writer.add(f"c{i}", split, image, AFFINE, label=label, seed=100 + i)
    writer.finish(
        DatasetInfo(
            task="SHC",
            classes=[f"k{i}" for i in range(7)],
            spacing=(2, 2, 2),
            source="test",
            window={"kind": "ct", "offset": 1024.0},
        )
    )
    return root


def test_roundtrip_splits_and_cases(tmp_path):
    ds = load_prepared(write_segmentation(tmp_path / "ds"), task=("SHC", "SAC"))
    assert ds.info.task_type == "segmentation" and ds.info.counts == {"train": 2, "val": 1, "test": 1}
    assert ds.ids("train") == ["c0", "c1"] and list(ds.split("test")["seed"]) == [103]
    case = ds.load_case("c3")
    assert case.image.dtype == np.float32 and case.image[0, 0, 0] == pytest.approx(0.3)
    assert case.label.dtype == np.uint8 and case.label[1, 2, 3] == 3 and case.target is None
    np.testing.assert_allclose(case.affine, AFFINE)
    assert [c.id for c in ds.load_split("train")] == ["c0", "c1"]
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["kit_version"] and meta["format"] == "gvsl-kit/prepared/1"
    with pytest.raises(GVSLInputError, match="dataset is for task SHC, expecting CCC"):
        load_prepared(tmp_path / "ds", task="CCC")
    with pytest.raises(GVSLInputError, match="unknown split 'dev'"):
        ds.split("dev")


def test_classification_manifest(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", "CCC")
    for i, split in enumerate(("train", "train", "val", "test")):
        writer.add(f"p{i}", split, np.zeros((3, 3, 3), np.float32), AFFINE, target=i % 2)
    writer.finish(DatasetInfo(task="CCC", classes=["covid"], spacing=(2, 2, 2), source="t", window={}))
    ds = load_prepared(tmp_path / "ds")
    assert ds.info.task_type == "classification" and list(ds.manifest["target"]) == [0, 1, 0, 1]
    assert ds.load_case("p1").target == 1 and ds.load_case("p1").label is None
    manifest = pd.read_csv(tmp_path / "ds" / "manifest.csv", keep_default_na=False)
    manifest.loc[2, "target"] = 2
    manifest.to_csv(tmp_path / "ds" / "manifest.csv", index=False)
    with pytest.raises(GVSLInputError, match=r"manifest\.csv: case p2: target '2' is not 0 or 1"):
        load_prepared(tmp_path / "ds")


def _edit_manifest(root, edit):
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False, dtype=str)
    edit(manifest)
    manifest.to_csv(root / "manifest.csv", index=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.loc.__setitem__((1, "split"), "dev"), r"unknown split names \['dev'\]"),
        (lambda m: m.loc.__setitem__((2, "split"), "train"), r"split 'val' is empty"),
        (lambda m: m.loc.__setitem__((1, "label"), ""), r"case c1: a segmentation case needs a label"),
        (lambda m: m.loc.__setitem__((1, "target"), "1"), r"case c1: a segmentation case must not have a target"),
        (lambda m: m.loc.__setitem__((3, "id"), "c0"), r"duplicate case id 'c0'"),
        (lambda m: m.pop("split"), r"missing columns \['split'\]"),
    ],
)
def test_manifest_validation(tmp_path, edit, message):
    root = write_segmentation(tmp_path / "ds")
    _edit_manifest(root, edit)
    with pytest.raises(GVSLInputError, match=message):
        load_prepared(root)


def test_missing_files(tmp_path):
    root = write_segmentation(tmp_path / "ds")
    (root / "labels" / "c2.nii.gz").unlink()
    with pytest.raises(GVSLInputError, match=r"case c2: label file .*labels/c2\.nii\.gz not found"):
        load_prepared(root)
    (root / "dataset.json").unlink()
    with pytest.raises(GVSLInputError, match=r"dataset\.json: not found"):
        load_prepared(root)
    (root / "dataset.json").write_text('{"task": "SHC"}')
    with pytest.raises(GVSLInputError, match=r"dataset\.json: missing keys"):
        load_prepared(root)


def test_atomic_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        (tmp / "manifest.csv").write_text("half")
        raise RuntimeError("crash midway")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as tmp:
        (tmp / "a").write_text("1")
        assert not out.exists()
    assert (out / "a").read_text() == "1"
    with pytest.raises(GVSLInputError, match="not empty"), atomic_output(out):
        pass
    with atomic_output(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["out"]
