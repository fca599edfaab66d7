"""The DVC pipeline: its settings files, its stage functions, and a whole tiny run in a temporary copy."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gvsl import pipeline, report
from gvsl.errors import GVSLInputError
from gvsl.pipeline.profile import copy_project
from gvsl.pretrain import PretrainConfig
from gvsl.report.page import FIGURE_CAPTIONS, FIGURE_FOLDER
from gvsl.settings import leaves
from gvsl.transfer import PlateauRule, TransferConfig

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"default": ROOT / "params.yaml", "paper": ROOT / "profiles" / "paper.yaml"}


def load(path):
    return yaml.safe_load(Path(path).read_text())


def test_the_paper_profile_is_the_defaults_and_the_default_profile_names_only_its_changes():
    defaults = pipeline.Settings().to_mapping()
    paper = pipeline.load_settings(PROFILES["paper"]).to_mapping()
    assert paper == defaults  # the kit's defaults are the paper's; the paper profile is the empty overlay
    overlay = load(PROFILES["default"])
    written = set(leaves(overlay)) | {".".join(p.split(".")[:n]) for p in leaves(overlay) for n in (1, 2, 3)}
    # every key a dvc.yaml stage tracks is written in params.yaml (DVC reads the file as it is, and refuses a
    # stage whose params are missing), for every task of its foreach
    for stage in load(ROOT / "dvc.yaml")["stages"].values():
        for key in stage.get("do", stage).get("params", []):
            for task in overlay["prepare"]["tasks"] if "${key}" in key else [None]:
                assert key.replace("${key}", str(task)) in written, key
    # and it names no other setting at its default: but what DVC reads as written (its foreach lists, the
    # per-task params) and the per-task crop tables, which read as wholes
    read_by_dvc = ("profile", "pipeline.methods", "prepare.seed", "prepare.tasks.")
    redundant = [
        path
        for path, value in leaves(overlay).items()
        if leaves(defaults).get(path, ...) == value and ".crop." not in path and not path.startswith(read_by_dvc)
    ]
    assert redundant == []
    assert pipeline.load_settings(PROFILES["default"]).profile == "default"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds_typed_configs(profile):
    settings = pipeline.load_settings(PROFILES[profile])
    assert set(settings.prepare.tasks) == {"pretrain", *settings.pipeline.tasks}
    for method in settings.pipeline.pretrained:
        configs = pipeline.pretrain_configs(method, settings)
        assert [c.seed for c in configs] == list(settings.pretrain.seeds)
        assert all(isinstance(c, PretrainConfig) and c.method == method for c in configs)
        assert all(c.channels == settings.model.channels for c in configs)
    for protocol in pipeline.PROTOCOLS:
        runs = settings.transfer.protocol(protocol)
        # several runs (pre-training seed × transfer seed), so every value has an sd
        assert len(runs.seeds) * len(settings.pretrain.seeds) >= 2
        for task in settings.pipeline.tasks:
            crop = runs.task_crop(task) or (32, 32, 32)
            TransferConfig(**runs.schedule(task), task="segmentation", protocol=protocol, num_classes=8, crop=crop)


def test_paper_profile_is_the_papers_schedule():
    paper = pipeline.load_settings(PROFILES["paper"])
    assert paper.model.channels == (32, 64, 128, 256, 512, 256, 128, 64, 32)
    assert (paper.pretrain.iterations, paper.pretrain.batch_size, paper.pretrain.lr) == (200_000, 2, 1e-4)
    assert (paper.pretrain.crop, paper.pretrain.lr_schedule) == ((128, 128, 128), "constant")
    assert len(paper.pipeline.methods) == 13
    for protocol in pipeline.PROTOCOLS:
        runs = paper.transfer.protocol(protocol)
        assert {runs.cap(task) for task in paper.pipeline.tasks} == {40_000}
        assert (runs.val_every, runs.batch_size, runs.lr, runs.stop_on_plateau) == (200, 1, 1e-4, False)


def test_profiles_overlay_the_defaults_and_a_new_source_replaces_the_task(tmp_path):
    (tmp_path / "a.yaml").write_text("pretrain: {iterations: 7}\nprepare: {tasks: {SHC: {source: phantom-ct}}}\n")
    (tmp_path / "b.yaml").write_text("pretrain: {lr: 0.5}\nexecutor: {kind: slurm, partition: gpu}\n")
    settings = pipeline.load_settings(tmp_path / "a.yaml", [tmp_path / "b.yaml"])
    assert (settings.pretrain.iterations, settings.pretrain.lr, settings.pretrain.crop) == (7, 0.5, (128, 128, 128))
    # the paper's SHC is MM-WHS under data/mmwhs; a generated source takes none of its settings
    assert settings.prepare.tasks["SHC"] == {"source": "phantom-ct"}
    assert settings.prepare.tasks["SAC"] == {"source": "asoca", "root": "data/asoca"}
    assert settings.executor["partition"] == "gpu" and settings.executor["gpus_per_job"] == 1
    # the resolved settings read back to themselves: what a copy of the project runs with
    assert pipeline.compose(settings.to_mapping()) == settings


def test_stage_settings_errors_name_the_key(tmp_path):
    params = load(PROFILES["default"])
    params["prepare"]["tasks"]["SHC"]["colour"] = "blue"
    with pytest.raises(GVSLInputError, match=r"prepare\.tasks\.SHC: unknown settings \['colour'\]"):
        pipeline.prepare_stage("SHC", params, build=tmp_path)
    settings = pipeline.load_settings(PROFILES["default"])
    with pytest.raises(GVSLInputError, match=r"prepare\.tasks: no task 'MSD'"):
        pipeline.prepare_stage("MSD", settings, build=tmp_path)
    with pytest.raises(GVSLInputError, match="unknown method 'genesis'"):
        pipeline.transfer_stage("genesis", settings, build=tmp_path)


def test_dvc_stages_use_the_package_layout():
    stages = load(ROOT / "dvc.yaml")["stages"]
    assert "build/prepared/${key}" in stages["prepare"]["do"]["outs"]
    # one pre-training stage runs every (method, seed); it keeps its folder when it re-runs, so that an
    # interrupted run resumes and finished ones are kept (tests/test_resume.py)
    assert {"build/pretrain": {"persist": True}} in stages["pretrain"]["outs"]
    assert {"pipeline", "pretrain", "executor"} <= set(stages["pretrain"]["params"])
    # each method's transfer depends on its own folder inside that output, not on the other methods'
    assert "build/pretrain/${item}" in stages["transfer"]["do"]["deps"]
    assert "executor" in stages["transfer"]["do"]["params"]
    assert {"build/transfer/${item}": {"persist": True}} in stages["transfer"]["do"]["outs"]
    assert str(pipeline.transfer_dir("SHC", "linear", "gvsl")) == "build/transfer/gvsl/SHC-linear"
    assert str(pipeline.pretrain_dir("gvsl")) == "build/pretrain/gvsl"
    assert str(pipeline.prepared_dir("SHC")) == "build/prepared/SHC"


# ------------------------------------------------------------------------------------------ end to end

TINY = {
    "profile": "tiny-test",
    "pipeline": {
        "tasks": ["SHC", "CCC"],
        "methods": ["scratch", "rotation", "no_zmatch", "no_fundament", "no_affine", "gvsl"],
    },
    "prepare": {
        "seed": 0,
        "tasks": {
            "pretrain": {"source": "phantom-ct", "shape": [32, 32, 32], "spacing": [10.0, 10.0, 10.0], "subjects": 3},
            # 20: the SHC split's proportions (8/4/40) then leave 2 validation subjects, the held-out pairs' least
            "SHC": {"source": "phantom-ct", "shape": [32, 32, 32], "spacing": [10.0, 10.0, 10.0], "subjects": 20},
            # 20: 3 validation cases, of both classes (an AUC needs them)
            "CCC": {"source": "phantom-ct", "shape": [16, 16, 16], "spacing": [20.0, 20.0, 20.0], "subjects": 20},
        },
    },
    "model": {"channels": [8, 8, 8, 8, 8, 8, 8, 8, 8]},
    "pretrain": {
        "seeds": [0, 1],
        "processes": 2,
        "iterations": 3,
        "batch_size": 1,
        "crop": [16, 16, 16],
        "crop_jitter": 0,
        "lr": 1e-4,
        "lr_schedule": "cosine",
        "warmup": 1,
        "checkpoint_every": 2,
        "log_every": 1,
        "eval_every": 2,
        "heldout": {"task": "SHC", "split": "val", "pairs": 2},
        "devices": ["cpu", "cpu"],
    },
    "transfer": {
        "processes": 2,
        "devices": ["cpu", "cpu"],
        "linear": {
            "seeds": [0, 1],
            "crop": {"SHC": None, "CCC": None},
            "iterations": 6,
            "val_every": 1,
            "stop_on_plateau": True,
            "min_iterations": 4,
            "plateau_needs_rise": True,
            "lr": 1e-2,
            "fractions": [0.5, 1.0],
        },
        "finetune": {
            "seeds": [0],
            "crop": {"SHC": [16, 16, 16], "CCC": None},
            "iterations": {"SHC": 3, "CCC": 2},
            "val_every": 1,
            "min_iterations": 0,
            "fractions": [1.0],
            "lr": 1e-3,
            "class_weighting": "sqrt_inverse",
        },
    },
    "report": {"fig6": {"task": "SHC", "protocol": "finetune"}, "tsne": {"max_per_class": 8, "seed": 0}},
    "executor": {"kind": "local"},
}


def dvc(project, *args):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # bytecode written by the stages must not make them look changed (.dvcignore), so let Python write it
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def make_project(project: Path, settings) -> Path:
    """A committed copy of the project in ``project`` with ``settings`` as its params.yaml."""
    return copy_project(ROOT, project, settings)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """A copy of the project with tiny settings, reproduced once."""
    project = make_project(tmp_path_factory.mktemp("project"), TINY)
    dvc(project, "repro")
    return project


def test_pipeline_reproduces_the_report(tiny_project):
    table = pd.read_csv(tiny_project / "results" / "table1.csv")
    assert list(table.columns) == report.TABLE1_COLUMNS
    assert len(table) == 2 * 2 * 6 and set(table["profile"]) == {"tiny-test"}
    # a baseline flows through pre-training, transfer and the report like GVSL, with the paper's values
    rotation = table[table["method"] == "rotation"]
    assert len(rotation) == 4 and rotation["paper_value"].notna().all() and rotation["gain"].notna().all()
    assert set(table["n_runs"][table["protocol"] == "linear"]) == {4}  # 2 pre-training × 2 transfer seeds
    # every pre-trained row has a gain; scratch has none. Two pre-training seeds are fewer than an interval
    # needs (gvsl.stats.MIN_SEEDS), so the gains have none (tests/test_stats.py checks the intervals)
    pretrained = table[table["method"] != "scratch"]
    assert pretrained["gain"].notna().all() and pretrained[["gain_low", "gain_high"]].isna().all().all()
    assert table.loc[table["method"] == "scratch", "gain"].isna().all()
    # each run's verdict is the plateau rule on its own validation curve, and a run stops where the rule holds
    summary = json.loads((tiny_project / "build" / "transfer" / "gvsl" / "SHC-linear" / "summary.json").read_text())
    rule = PlateauRule(min_iterations=4)
    assert summary["run_converged"] == [rule.reached(curve) for curve in summary["val_curves"]]
    assert all(n == 6 or done for n, done in zip(summary["iterations"], summary["run_converged"]))
    assert (
        summary["converged"]
        == all(summary["run_converged"])
        == bool(
            table.loc[
                (table["method"] == "gvsl") & (table["protocol"] == "linear") & (table["task"] == "SHC"), "converged"
            ].iloc[0]
        )
    )
    assert len(summary["per_case"]) == 4 and len(summary["per_case"][0]["dice"]) == len(summary["case_ids"])
    for name in FIGURE_CAPTIONS:
        assert (tiny_project / "results" / FIGURE_FOLDER / f"{name}.png").stat().st_size > 1000
    assert (tiny_project / "results" / "figures" / "cohort-SHC.png").stat().st_size > 1000
    # the label-efficiency curves: every method and task of the linear probes, at half and all of the labels;
    # the full fraction's cells are Table 1's, the half-label ones train on fewer cases
    efficiency = pd.read_csv(tiny_project / "results" / "label_efficiency.csv")
    assert list(efficiency.columns) == report.LABEL_EFFICIENCY_COLUMNS
    assert len(efficiency) == 6 * 2 * 2 and set(efficiency["protocol"]) == {"linear"}
    assert set(efficiency["fraction"]) == {0.5, 1.0} and set(efficiency["n_runs"]) == {4}
    full = efficiency[efficiency["fraction"] == 1.0].merge(table, on=["method", "task", "protocol"])
    assert np.allclose(full["value_x"], full["value_y"])
    for (_, _), cell in efficiency.groupby(["method", "task"]):
        assert cell.sort_values("fraction")["labelled_cases"].is_monotonic_increasing
        assert cell["labelled_cases"].iloc[0] < cell["labelled_cases"].iloc[1]
    half = tiny_project / "build" / "transfer" / "gvsl" / "SHC-linear-labels0.5" / "summary.json"
    half_cases = json.loads(half.read_text())["train_cases"]
    assert all(set(h) < set(f) for h, f in zip(half_cases, summary["train_cases"]))  # nested, run by run
    page = (tiny_project / "results" / "report.html").read_text()
    # the summary opens the page, and the page shows no NaN
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Table 1</h2>") and "NaN" not in page
    assert "paper" in (tiny_project / "results" / "table1.md").read_text()
    metrics = json.loads((tiny_project / "results" / "metrics.json").read_text())
    assert set(metrics) == {"linear", "finetune", "pretext", "pretext_loss"}
    assert set(metrics["pretext_loss"]) == {"rotation", "no_zmatch", "no_fundament", "no_affine", "gvsl"}
    assert {"heldout_loss_first", "heldout_loss_last", "falls"} <= set(metrics["pretext_loss"]["rotation"])
    gvsl_shc = metrics["linear"]["SHC"]["gvsl"]
    row = table[(table["method"] == "gvsl") & (table["protocol"] == "linear") & (table["task"] == "SHC")].iloc[0]
    assert gvsl_shc["gain"] == pytest.approx(round(row["gain"], 2)) and set(gvsl_shc) == {
        "value",
        "gain",
        "gain_low",
        "gain_high",
        "converged",
    }
    assert set(metrics["pretext"]) == {"no_fundament", "no_affine", "gvsl"}
    assert {
        "identity_dice",
        "affine_dice",
        "warped_dice",
        "heldout_ncc_first",
        "heldout_ncc_last",
        "warped_gain",
        "warped_gain_low",
        "warped_gain_high",
    } <= set(metrics["pretext"]["gvsl"])
    assert "affine_dice" not in metrics["pretext"]["no_affine"]
    for seed in (0, 1):
        pretext = json.loads(
            (tiny_project / "build" / "pretrain" / "gvsl" / f"seed{seed}" / "pretext.json").read_text()
        )
        assert (pretext["first"]["iteration"], pretext["last"]["iteration"]) == (0, 3)
        assert len(pretext["pairs"]) == 2
        log = pd.read_csv(
            tiny_project
            / "build"
            / "pretrain"
            / "gvsl"
            / f"seed{seed}"
            / "dvclive"
            / "plots"
            / "metrics"
            / "heldout"
            / "warped_dice.tsv",
            sep="\t",
        )
        assert list(log["step"]) == [0, 2, 3]
    for notebook in ("prepare/SHC", "pretrain", "transfer/gvsl", "report"):
        assert (tiny_project / "build" / "notebooks" / f"{notebook}.ipynb").is_file()


def test_unchanged_pipeline_does_nothing_and_a_change_reruns_its_dependents(tiny_project):
    assert "Data and pipelines are up to date" in dvc(tiny_project, "status")
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["transfer"]["finetune"]["lr"] = 2e-3
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(dvc(tiny_project, "status", "--json")))
    finally:
        (tiny_project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    # the transfer stages, and the report, whose page lists the transfer settings; not preparation or pre-training
    assert changed == {f"transfer@{m}" for m in TINY["pipeline"]["methods"]} | {"report"}


def test_a_change_to_the_network_code_reruns_every_stage_that_runs_it(tiny_project):
    """Scratch's backbone.pt can come out byte-identical after a change to the U-Net, so the transfer
    stages must depend on the code itself, not only on the backbone files."""
    unet = tiny_project / "gvsl" / "nets" / "unet.py"
    original = unet.read_text()
    unet.write_text(original + "\n# touched\n")
    try:
        changed = set(json.loads(dvc(tiny_project, "status", "--json")))
    finally:
        unet.write_text(original)
    transfer = {f"transfer@{m}" for m in TINY["pipeline"]["methods"]}
    assert transfer <= changed
    assert "pretrain" in changed and "report" in changed


def test_transfer_keeps_finished_runs_and_redoes_changed_or_unfinished_ones(tiny_project, tmp_path, capfd):
    """The transfer stage's folder persists across dvc repro, so an interrupted stage resumes with
    the runs it had not finished; a run with other settings is trained again, and dropped runs go."""
    build = tmp_path / "build"
    shutil.copytree(tiny_project / "build", build)
    cell = build / "transfer" / "rotation" / "SHC-linear"
    before = json.loads((cell / "summary.json").read_text())
    shutil.rmtree(cell / "p1-t3")  # a run the interruption never finished
    (cell / "p0-t1" / pipeline.RUN_INPUTS).unlink()  # one interrupted before it recorded its inputs
    capfd.readouterr()
    pipeline.transfer_stage("rotation", TINY, build=build)
    lines = capfd.readouterr().out.splitlines()
    kept = [line for line in lines if "kept from an earlier run" in line]
    trained = [line for line in lines if ": test " in line]
    # 2 tasks × 2 pre-training seeds × (linear: 2 transfer seeds × 2 label fractions + fine-tuning: 1) = 20 runs
    assert len(kept) == 20 - 2 and sorted(line.split(":")[0] for line in trained) == [
        "transfer SHC-linear-rotation p0-t1",
        "transfer SHC-linear-rotation p1-t3",
    ]
    after = json.loads((cell / "summary.json").read_text())
    # CPU runs are deterministic, so the re-trained runs give the uninterrupted run's numbers
    for key in ("runs", "test", "mean", "sd", "val_curves", "per_case", "best_iterations", "run_converged"):
        assert after[key] == before[key], key
    # another learning rate re-trains that protocol's runs; a dropped transfer seed's folders go
    settings = json.loads(json.dumps(TINY))
    settings["transfer"]["linear"].update(lr=2e-2, seeds=[0])
    capfd.readouterr()
    pipeline.transfer_stage("rotation", settings, build=build)
    lines = capfd.readouterr().out.splitlines()
    assert sum("kept from an earlier run" in line for line in lines) == 4  # fine-tuning: 2 tasks × 2 pre-training seeds
    # SHC and CCC linear, two pre-training seeds, each on half and on all of the labels
    assert sum(": test " in line for line in lines) == 8
    # each pre-training seed's run has its own transfer seed (gvsl.pipeline.stage_transfer.transfer_seed)
    assert sorted(p.name for p in cell.iterdir() if p.is_dir()) == ["p0-t0", "p1-t1"]


def test_pretraining_keeps_finished_runs_and_trains_only_what_is_missing(tiny_project, tmp_path, capfd):
    """The one pre-training stage re-runs whenever a method or a pretrain setting changes; the runs it had
    finished with the same inputs stay as they are (files untouched), so their transfer stages do not run."""
    build = tmp_path / "build"
    shutil.copytree(tiny_project / "build", build)
    before = {p: p.stat().st_mtime_ns for p in (build / "pretrain").rglob("*") if p.is_file()}
    shutil.rmtree(build / "pretrain" / "gvsl" / "seed1")  # a method's run that is missing (new seed, new method)
    capfd.readouterr()
    pipeline.pretrain_stage(TINY, build=build)
    lines = capfd.readouterr().out.splitlines()
    kept = sorted(line.split(":")[0] for line in lines if ": kept, finished earlier" in line)
    assert len(kept) == 5 * 2 - 1 and "pretrain gvsl seed 1" not in kept
    assert any(line.startswith("pretrain gvsl seed 1: done in") for line in lines)
    after = {p: p.stat().st_mtime_ns for p in (build / "pretrain").rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if "gvsl/seed1" not in str(p)} == {
        p: t for p, t in before.items() if "gvsl/seed1" not in str(p)
    }
