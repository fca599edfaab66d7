"""The prepared-dataset format that every stage after ``gvsl prepare`` reads.

A prepared dataset is a folder::

    dataset.json        task, task type, class names, spacing, source, window, generator, counts, version
    manifest.csv        one row per case: id, split, image, label, target (+ provenance columns)
    images/<id>.nii.gz  float32, windowed to [0, 1], RAS+ canonical, affine in mm
    labels/<id>.nii.gz  uint8 class ids (segmentation tasks only)

Paths in the manifest are relative to the folder; ``label`` is empty for unlabeled cases and
classification tasks, ``target`` (0/1) is filled for classification only. Splits are ``train``,
``val`` and ``test`` (pre-training sets use ``train`` only) and are stored, never recomputed.

Folders are written atomically (:func:`atomic_output`): everything is built in a temporary sibling
folder that is renamed into place at the end, so a failed run leaves neither a manifest nor a
partial folder, and an existing output is only replaced once the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from gvsl import __version__
from gvsl.data.io import write_nifti
from gvsl.errors import GVSLInputError

__all__ = [
    "DATASET_FORMAT",
    "SPLITS",
    "TASK_TYPES",
    "Case",
    "DatasetInfo",
    "DatasetWriter",
    "PreparedDataset",
    "atomic_output",
    "load_prepared",
]

DATASET_FORMAT = "gvsl-kit/prepared/1"
SPLITS = ("train", "val", "test")
#: task key -> task type; MSD is any Medical Segmentation Decathlon task
TASK_TYPES = {
    "pretrain": "pretrain",
    "SHC": "segmentation",
    "SAC": "segmentation",
    "CCC": "classification",
    "SBM": "segmentation",
    "MSD": "segmentation",
}
MANIFEST_COLUMNS = ("id", "split", "image", "label", "target")
# task type -> whether each case must (True) or must not (False) carry a label / a target
_REQUIRED = {
    "segmentation": {"label": True, "target": False},
    "classification": {"label": False, "target": True},
    "pretrain": {"label": False, "target": False},
}


@dataclass
class DatasetInfo:
    """Contents of ``dataset.json``.

    Attributes:
        task: task key, one of :data:`TASK_TYPES`.
        task_type: ``pretrain``, ``segmentation`` or ``classification`` (derived from ``task``).
        classes: foreground class names; label value ``i`` is ``classes[i - 1]`` (segmentation), the
            positive class name (classification), empty for pre-training.
        spacing: voxel size (mm) of every volume.
        source: the ``gvsl prepare --source`` it came from.
        window: how intensities were mapped to [0, 1], e.g. ``{"kind": "ct", "offset": 1024, "width": 2048}``.
        generator: parameters that reproduce the dataset (seed, counts, shapes, ROI, paths…).
        counts: cases per split.
        label_values: original label value -> class id, where the source's values were remapped.
        kit_version: ``gvsl.__version__`` of the writer.
        format: format tag, :data:`DATASET_FORMAT`.
    """

    task: str
    classes: tuple[str, ...]
    spacing: tuple[float, float, float]
    source: str
    window: dict[str, Any]
    generator: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    label_values: dict[str, int] = field(default_factory=dict)
    task_type: str = ""
    kit_version: str = __version__
    format: str = DATASET_FORMAT

    def __post_init__(self):
        if self.task not in TASK_TYPES:
            raise GVSLInputError(f"task {self.task!r} is not one of {', '.join(TASK_TYPES)}")
        expected_type = TASK_TYPES[self.task]
        if self.task_type and self.task_type != expected_type:
            raise GVSLInputError(f"task {self.task} has type {expected_type}, not {self.task_type!r}")
        self.task_type = expected_type
        self.classes = tuple(self.classes)
        self.spacing = tuple(float(s) for s in self.spacing)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["spacing"] = list(self.classes), list(self.spacing)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "dataset.json") -> DatasetInfo:
        """Build from parsed JSON; missing or unknown keys raise GVSLInputError naming ``where``."""
        required = {"task", "classes", "spacing", "source", "window"}
        known = {f for f in cls.__dataclass_fields__}
        missing, unknown = required - set(values), set(values) - known
        if missing:
            raise GVSLInputError(f"{where}: missing keys {sorted(missing)}")
        if unknown:
            raise GVSLInputError(f"{where}: unknown keys {sorted(unknown)}")
        if values.get("format", DATASET_FORMAT) != DATASET_FORMAT:
            raise GVSLInputError(f"{where}: format {values['format']!r}, this kit reads {DATASET_FORMAT!r}")
        return cls(**values)


@dataclass
class Case:
    """One case held in memory: a prepared dataset's (:meth:`PreparedDataset.load_split`) or one a caller builds
    for :mod:`gvsl.transfer`, which reads ``id``, ``image``, ``label`` and ``target`` only.

    Attributes:
        id: case id, used in error messages.
        image: float32 (D, H, W), or (C, D, H, W) for transfer, intensities already normalised ([0, 1] when
            prepared).
        label: uint8 (D, H, W) class ids (segmentation), or None.
        target: 0/1 (binary classification), or None.
        affine: (4, 4) voxel -> RAS+ world (mm); None for a case built without a grid.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None = None
    target: int | None = None
    affine: np.ndarray | None = None


@contextlib.contextmanager
def atomic_output(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that becomes ``out`` only if the block succeeds.

    Args:
        out: final folder.
        overwrite: replace an existing non-empty ``out`` (after the new one is complete); without it
            an existing non-empty ``out`` is refused before any work is done.

    Raises:
        GVSLInputError: ``out`` exists, is not empty and ``overwrite`` is False, or is a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GVSLInputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GVSLInputError(f"{out}: folder exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class DatasetWriter:
    """Writes the volumes and the manifest of one prepared dataset into ``root`` (normally a temporary folder).

    Args:
        root: folder to write into (created).
        task: task key; decides which of ``label`` / ``target`` cases must carry.
    """

    def __init__(self, root: str | os.PathLike, task: str):
        if task not in TASK_TYPES:
            raise GVSLInputError(f"task {task!r} is not one of {', '.join(TASK_TYPES)}")
        self.root = Path(root)
        self.task = task
        self.task_type = TASK_TYPES[task]
        self.rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        if self.task_type == "segmentation":
            (self.root / "labels").mkdir(exist_ok=True)

    def add(
        self,
        case_id: str,
        split: str,
        image: np.ndarray,
        affine: np.ndarray,
        *,
        label: np.ndarray | None = None,
        target: int | None = None,
        **provenance: Any,
    ) -> None:
        """Write one case. ``provenance`` (seed, source file…) becomes extra manifest columns."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if case_id in self._ids:
            raise ValueError(f"case id {case_id!r} written twice")
        self._ids.add(case_id)
        if self.task_type == "segmentation" and label is None:
            raise ValueError(f"{case_id}: a segmentation case needs a label")
        if self.task_type != "segmentation" and label is not None:
            raise ValueError(f"{case_id}: only segmentation cases carry labels")
        if (self.task_type == "classification") != (target is not None):
            raise ValueError(f"{case_id}: classification cases, and only they, carry a 0/1 target")
        assert image.ndim == 3 and (label is None or label.shape == image.shape)
        image_rel = f"images/{case_id}.nii.gz"
        write_nifti(self.root / image_rel, image.astype(np.float32, copy=False), affine)
        label_rel = ""
        if label is not None:
            if label.min() < 0 or label.max() > 255:
                raise ValueError(f"{case_id}: label ids must fit uint8")
            label_rel = f"labels/{case_id}.nii.gz"
            write_nifti(self.root / label_rel, label.astype(np.uint8), affine)
        self.rows.append(
            {
                "id": case_id,
                "split": split,
                "image": image_rel,
                "label": label_rel,
                "target": "" if target is None else int(target),
                **provenance,
            }
        )

    def finish(self, info: DatasetInfo) -> None:
        """Write ``manifest.csv`` and ``dataset.json`` (with the split counts) once every case is in."""
        if info.task != self.task:
            raise ValueError(f"info is for task {info.task}, writer for {self.task}")
        if not self.rows:
            raise ValueError(f"{self.root}: no cases were added")
        manifest = pd.DataFrame(self.rows)
        info.counts = {s: int((manifest["split"] == s).sum()) for s in SPLITS if (manifest["split"] == s).any()}
        manifest.to_csv(self.root / "manifest.csv", index=False)
        with open(self.root / "dataset.json", "w") as f:
            json.dump(info.to_dict(), f, indent=2)
            f.write("\n")


@dataclass
class PreparedDataset:
    """A prepared dataset folder, validated (see :func:`load_prepared`).

    Attributes:
        root: the folder.
        info: contents of ``dataset.json``.
        manifest: ``manifest.csv`` as a DataFrame (``label`` "" when absent, ``target`` int or NA).
    """

    root: Path
    info: DatasetInfo
    manifest: pd.DataFrame

    def split(self, name: str) -> pd.DataFrame:
        """Manifest rows of split ``name`` (``train``, ``val``, ``test``)."""
        if name not in SPLITS:
            raise GVSLInputError(f"{self.root}: unknown split {name!r} (expecting one of {', '.join(SPLITS)})")
        return self.manifest[self.manifest["split"] == name]

    def ids(self, split: str) -> list[str]:
        """Case ids of ``split``, in manifest order."""
        return list(self.split(split)["id"])

    def load_case(self, case_id: str) -> Case:
        """Read one case's volumes as numpy arrays."""
        rows = self.manifest[self.manifest["id"] == case_id]
        if rows.empty:
            raise GVSLInputError(f"{self.root / 'manifest.csv'}: no case {case_id!r}")
        row = rows.iloc[0]
        img = nib.load(str(self.root / row["image"]))
        image = np.asarray(img.dataobj, dtype=np.float32)
        label = None
        if row["label"]:
            label = np.asarray(nib.load(str(self.root / row["label"])).dataobj, dtype=np.uint8)
            if label.shape != image.shape:
                raise GVSLInputError(
                    f"{self.root / row['label']}: label shape {label.shape} differs from image shape {image.shape}"
                )
        target = None if pd.isna(row["target"]) else int(row["target"])
        return Case(case_id, image, label, target, np.asarray(img.affine))

    def load_split(self, split: str) -> list[Case]:
        """Every case of ``split``, loaded."""
        return [self.load_case(i) for i in self.ids(split)]


def _read_manifest(path: Path) -> pd.DataFrame:
    try:
        manifest = pd.read_csv(
            path, dtype={"id": str, "split": str, "image": str, "label": str, "target": str}, keep_default_na=False
        )
    except Exception as err:  # pandas raises ParserError, EmptyDataError, UnicodeDecodeError…
        raise GVSLInputError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise GVSLInputError(f"{path}: missing columns {missing} (expecting at least {list(MANIFEST_COLUMNS)})")
    target = pd.to_numeric(manifest["target"].replace("", np.nan), errors="coerce")
    bad = manifest["target"].astype(str).ne("") & ~target.isin([0, 1])
    if bad.any():
        row = manifest[bad].iloc[0]
        raise GVSLInputError(f"{path}: case {row['id']}: target {row['target']!r} is not 0 or 1")
    manifest["target"] = target.astype("Int64")
    return manifest


def load_prepared(path: str | os.PathLike, *, task: str | Sequence[str] | None = None) -> PreparedDataset:
    """Open and validate a prepared dataset folder.

    Args:
        path: the folder written by ``gvsl prepare``.
        task: if given, the task key (or keys) the caller can use; another task is an error.

    Raises:
        GVSLInputError: missing ``dataset.json``/``manifest.csv``, unknown split names, a split listed
            in ``dataset.json`` that is empty or whose count differs, duplicate ids, missing volume
            files, labels or targets where the task type does not allow them (or missing where it needs them).
    """
    root = Path(path)
    meta_path, manifest_path = root / "dataset.json", root / "manifest.csv"
    for p in (meta_path, manifest_path):
        if not p.is_file():
            raise GVSLInputError(f"{p}: not found; is {root} a prepared dataset (gvsl prepare)?")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GVSLInputError(f"{meta_path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise GVSLInputError(f"{meta_path}: expecting a JSON object")
    info = DatasetInfo.from_dict(meta, where=str(meta_path))
    wanted = (task,) if isinstance(task, str) else tuple(task or ())
    if wanted and info.task not in wanted:
        raise GVSLInputError(f"{meta_path}: dataset is for task {info.task}, expecting {' or '.join(wanted)}")

    manifest = _read_manifest(manifest_path)
    if manifest.empty:
        raise GVSLInputError(f"{manifest_path}: no cases")
    unknown = sorted(set(manifest["split"]) - set(SPLITS))
    if unknown:
        raise GVSLInputError(f"{manifest_path}: unknown split names {unknown} (expecting {', '.join(SPLITS)})")
    duplicated = manifest["id"][manifest["id"].duplicated()]
    if not duplicated.empty:
        raise GVSLInputError(f"{manifest_path}: duplicate case id {duplicated.iloc[0]!r}")
    found_counts = manifest["split"].value_counts()
    for split, count in info.counts.items():
        if split not in found_counts:
            raise GVSLInputError(f"{manifest_path}: split {split!r} is empty (dataset.json lists {count} cases)")
    for split, count in info.counts.items():
        found = int(found_counts[split])
        if found != count:
            raise GVSLInputError(f"{manifest_path}: split {split!r} has {found} cases, dataset.json lists {count}")
    for split in sorted(set(manifest["split"]) - set(info.counts)):
        raise GVSLInputError(f"{manifest_path}: split {split!r} is not listed in dataset.json counts")

    present = {"label": manifest["label"] != "", "target": manifest["target"].notna()}
    for what, required in _REQUIRED[info.task_type].items():
        wrong = present[what] != required
        if wrong.any():
            case_id = manifest.loc[wrong, "id"].iloc[0]
            needs = "needs" if required else "must not have"
            raise GVSLInputError(f"{manifest_path}: case {case_id}: a {info.task_type} case {needs} a {what}")
    for column in ("image", "label"):
        for case_id, rel in zip(manifest["id"], manifest[column]):
            if rel and not (root / rel).is_file():
                raise GVSLInputError(f"{manifest_path}: case {case_id}: {column} file {root / rel} not found")
    return PreparedDataset(root, info, manifest)
