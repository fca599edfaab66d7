"""The paper-profile rehearsal: its overlay, its format-faithful stand-ins, and (slow) the whole run."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from gvsl import rehearsal
from gvsl.data import load_prepared
from gvsl.data.cohorts import phantom
from gvsl.data.io import read_volume
from gvsl.data.prepare import prepare
from gvsl.data.preprocess import to_canonical
from gvsl.data.sources import FREESURFER_NAMES
from gvsl.errors import GVSLInputError
from gvsl.pipeline import load_settings
from gvsl.pipeline.profile import MARKER, README_DATA_COMMANDS
from gvsl.rehearsal.stand_ins import write_fixture
from tests.test_pipeline import ROOT


def _paper():
    return load_settings(ROOT / rehearsal.PAPER).to_mapping()


def test_overlay_changes_only_sizes_iterations_and_widths():
    paper = _paper()
    params = rehearsal.rehearsal_settings(ROOT).to_mapping()
    changed = rehearsal.changed_settings(paper, params)
    assert changed, "the overlay shrinks the paper profile"
    assert {"pretrain.iterations", "model.channels", "transfer.linear.iterations"} <= set(changed)
    # every method, task, source, learning rate and schedule stays the paper's
    for key in ("pipeline", "profile"):
        assert params[key] == paper[key]
    for task, settings in paper["prepare"]["tasks"].items():
        assert {k: v for k, v in params["prepare"]["tasks"][task].items() if k != "spacing"} == settings
    for path, (before, after) in changed.items():
        if path.endswith(("iterations", "every", "pairs")) or ".iterations." in path:
            assert after < before, path
    assert (params["pretrain"]["lr"], params["transfer"]["finetune"]["lr"]) == (1e-4, 1e-4)


def test_an_overlay_that_changes_other_settings_is_refused(tmp_path):
    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / rehearsal.PAPER, tmp_path / rehearsal.PAPER)
    overlay = yaml.safe_load((ROOT / rehearsal.OVERLAY).read_text())
    overlay["pretrain"]["lr"] = 1e-3
    overlay["pipeline"] = {"methods": ["scratch", "gvsl"]}
    # a size that would switch a code path (whole-volume SBM input to crops), and a batch size, which is not a size
    # of the data: the overlay may not change them (a shallower network is not a valid setting at all)
    overlay["transfer"]["linear"]["crop"]["SBM"] = [16, 16, 16]
    overlay["pretrain"]["batch_size"] = 1
    (tmp_path / rehearsal.OVERLAY).write_text(yaml.safe_dump(overlay))
    with pytest.raises(
        GVSLInputError,
        match=r"changes \['pipeline\.methods', 'pretrain\.batch_size', 'pretrain\.lr', "
        r"'transfer\.linear\.crop\.SBM'\]",
    ):
        rehearsal.rehearsal_settings(tmp_path)


def _prepared(source, out, root=None, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # three cases instead of the paper's split: scaled, with a warning
        return load_prepared(prepare(source, out, root, seed=0, **settings))


@pytest.mark.parametrize(
    "source, task, grid",
    [("mmwhs", "SHC", ((64, 64, 52), (5.0, 5.0, 6.25))), ("asoca", "SAC", ((80, 80, 64), (3.0, 3.0, 3.75)))],
)
def test_heart_standins_read_back_as_the_generator_made_them(tmp_path, source, task, grid):
    """Stored right-to-left as scanners do, in NIfTI or NRRD, read through the real source, each case
    equals the generator's own prepared case where the two crops overlap: same voxels (to the int16 rounding of
    HU), labels and world grid. The crops differ in place: the real source centres the paper's ROI on the
    labels, phantom-ct takes a fixed box as a user without labels would."""
    seeds = write_fixture(source, tmp_path / source, count=3)
    shape, spacing = grid
    settings = {"task": task, "spacing": spacing, "roi_mm": (176.0,) * 3}
    real = _prepared(source, tmp_path / "real", tmp_path / source, **settings)
    generated = _prepared("phantom-ct", tmp_path / "generated", shape=shape, subjects=3, **settings)
    assert real.info.classes == generated.info.classes and real.info.source == source
    generated_ids = dict(zip(generated.manifest["seed"].astype(int), generated.manifest["id"]))
    assert sorted(real.manifest["id"]) == sorted(seeds) and sorted(generated_ids) == sorted(seeds.values())
    for real_id, seed in seeds.items():
        a, b = real.load_case(real_id), generated.load_case(generated_ids[seed])
        in_a, in_b = _overlap(a.affine, a.label.shape, b.affine, b.label.shape)
        np.testing.assert_array_equal(a.label[in_a], b.label[in_b])
        np.testing.assert_allclose(a.image[in_a], b.image[in_b], atol=0.5 / 2048 + 1e-6)
        assert a.label.any() and np.count_nonzero(a.label[in_a]) > 0.8 * np.count_nonzero(a.label)


def _overlap(affine_a, shape_a, affine_b, shape_b):
    """Index slices of the voxels two crops of one grid share (the same voxel size and axes, whole-voxel offsets)."""
    a_in_b = np.linalg.solve(affine_b, affine_a)
    np.testing.assert_allclose(a_in_b[:3, :3], np.eye(3), atol=1e-6)  # one grid: only a shift between them
    shift = np.rint(a_in_b[:3, 3]).astype(int)
    np.testing.assert_allclose(a_in_b[:3, 3], shift, atol=1e-6)
    starts = [max(0, s) for s in shift]
    stops = [min(nb, s + na) for s, na, nb in zip(shift, shape_a, shape_b)]
    return (
        tuple(slice(lo - s, hi - s) for lo, hi, s in zip(starts, stops, shift)),
        tuple(slice(lo, hi) for lo, hi in zip(starts, stops)),
    )


def _reads_back_as_generated(path, seed, opacity=None):
    """The volume at ``path``, reoriented to RAS+, holds the generated subject's HU on its own grid."""
    volume = read_volume(path)
    array, affine = to_canonical(volume.array, volume.affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    subject = phantom.generate_subject(seed, shape=array.shape, spacing=tuple(spacing), opacity=opacity)
    np.testing.assert_array_equal(array, np.round(subject.image_hu).astype(np.int16))
    np.testing.assert_allclose(affine, np.diag([*spacing, 1.0]), atol=1e-6)
    return array.shape, tuple(spacing)


def test_unlabeled_ct_standins_read_back_in_nifti_and_nrrd(tmp_path):
    """Stored right-to-left, with thick slices and a slice count that differs between scans: a spacing
    or an axis read wrongly would give another volume than the generator's."""
    seeds = write_fixture("folder", tmp_path, count=2)  # the third format, MetaImage, needs ITK (below)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["chest_000.nii.gz", "chest_001.nrrd"]
    grids = [_reads_back_as_generated(path, seeds[path.name.split(".")[0]]) for path in files]
    assert grids[0][0] != grids[1][0] and all(g[1] == (5.0, 5.0, 6.25) for g in grids)


def test_candi_standin_has_freesurfer_labels_mapped_to_classes(tmp_path):
    write_fixture("candi", tmp_path / "candi", count=4)
    names = [FREESURFER_NAMES[v] for v in (2, 3, 4, 41, 42, 43)]
    dataset = _prepared("candi", tmp_path / "prepared", tmp_path / "candi", spacing=8.0)
    assert list(dataset.info.classes) == names
    case = dataset.load_case(dataset.manifest["id"].iloc[0])
    assert set(np.unique(case.label)) == set(range(len(names) + 1))
    # left structures lie left of right ones: the label's world x follows FreeSurfer's hemispheres
    x = case.affine[0, 0] * np.arange(case.label.shape[0]) + case.affine[0, 3]
    left_wm, right_wm = (
        x[np.nonzero(case.label == names.index(n) + 1)[0]].mean()
        for n in ("Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter")
    )
    assert left_wm < 0 < right_wm


def test_stoic_standin_targets_come_from_reference_csv(tmp_path):
    pytest.importorskip("itk", reason="MetaImage needs the optional ITK extra (make test-slow installs it)")
    seeds = write_fixture("stoic", tmp_path / "stoic", count=6)
    for patient, seed in seeds.items():
        _reads_back_as_generated(
            tmp_path / "stoic" / "data" / "mha" / f"{patient}.mha", seed, opacity=bool((int(patient) - 1) % 2)
        )
    dataset = _prepared("stoic", tmp_path / "prepared", tmp_path / "stoic", spacing=10.0)
    targets = dict(zip(dataset.manifest["id"].astype(str), dataset.manifest["target"]))
    assert targets == {str(i + 1): i % 2 for i in range(6)}


def test_the_rehearsal_points_data_at_the_standins_as_the_readme_says():
    readme = (ROOT / "data-embedded" / "README.md").read_text()
    for command in README_DATA_COMMANDS:
        assert " ".join(command).replace("{data}", "/path/to/MM-WHS") in readme


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 32 stages of about 20 s fixed cost each, and their work
def test_rehearse_paper_runs_every_stage_of_the_paper_profile(tmp_path):
    pytest.importorskip("itk", reason="make test-slow installs ITK (requirements-itk.lock) for STOIC's .mha")
    paper = _paper()
    summary = rehearsal.rehearse(tmp_path / "rehearsal", ROOT)
    methods, tasks = paper["pipeline"]["methods"], paper["pipeline"]["tasks"]
    assert summary["cells"] == len(methods) * len(tasks) * 2 and summary["methods"] == sorted(methods)
    assert summary["sources"] == {task: s["source"] for task, s in paper["prepare"]["tasks"].items()}
    assert json.loads((tmp_path / "rehearsal" / MARKER).read_text())["status"] == "passed"
    project = tmp_path / "rehearsal" / "project"
    # the user's path: data.dvc imports the stand-ins' folder, and a second look finds nothing to run
    assert str(tmp_path / "rehearsal" / "datasets") in (project / "data.dvc").read_text()
    assert (project / "data" / "mmwhs" / "ct_train_1001_image.nii.gz").is_file()
    status = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "status"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert "up to date" in status
