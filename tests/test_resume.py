"""An interrupted `dvc repro` resumes: pre-training from its last checkpoint, transfer with the runs it
had not finished; a changed setting starts afresh.

The pre-training and transfer stages keep their output folders between runs (``persist`` in dvc.yaml).
Pre-training continues from a checkpoint written with the same settings, data and code
(``resume="if-unchanged"``); transfer keeps the finished runs with the same inputs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.test_pipeline import TINY, make_project

ITERATIONS, EVERY = 240, 20
SETTINGS = {
    **TINY,
    "pipeline": {"tasks": ["SHC"], "methods": ["gvsl"]},
    "pretrain": {
        **TINY["pretrain"],
        "seeds": [0],
        "processes": 1,
        "devices": ["cpu"],
        "iterations": ITERATIONS,
        "checkpoint_every": EVERY,
        "eval_every": 120,
        "warmup": 10,
    },
    # one run after another, so that an interruption finds some finished and some not
    "transfer": {
        **TINY["transfer"],
        "processes": 1,
        "devices": ["cpu"],
        "linear": {**TINY["transfer"]["linear"], "seeds": [0, 1, 2, 3]},
    },
}
SEED_DIR = Path("build/pretrain/gvsl/seed0")


def _project(path: Path) -> Path:
    return make_project(path, SETTINGS)


def _env():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _repro(project: Path, stage: str = "pretrain") -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro", stage],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _checkpoint_iteration(project: Path) -> int:
    path = project / SEED_DIR / "checkpoint.pt"
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"]) if path.is_file() else 0
    except Exception:  # being replaced at this moment
        return 0


def _interrupt(project: Path, how: signal.Signals, stage: str = "pretrain", until=None) -> None:
    """Start `dvc repro stage`, and send ``how`` to its process group once ``until()`` holds
    (default: a pre-training checkpoint past the first is written)."""
    until = until or (lambda: _checkpoint_iteration(project) >= 2 * EVERY)
    log = open(project / "interrupted.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "repro", stage],
        cwd=project,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not until():
        assert process.poll() is None, (project / "interrupted.log").read_text()
        assert time.monotonic() < deadline, "not interrupted within 10 minutes"
        time.sleep(0.05)
    os.killpg(process.pid, how)
    process.wait(timeout=120)
    log.close()


def _backbone(project: Path) -> dict[str, torch.Tensor]:
    return torch.load(project / SEED_DIR / "backbone.pt", map_location="cpu", weights_only=True)["state_dict"]


def _training_log(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / SEED_DIR / "dvclive" / "plots" / "metrics" / "train" / "total.tsv", sep="\t")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    project = _project(tmp_path_factory.mktemp("uninterrupted"))
    _repro(project)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_repro_resumes_pretraining_bit_for_bit(how, uninterrupted, tmp_path):
    project = _project(tmp_path)
    _interrupt(project, how)
    reached = _checkpoint_iteration(project)
    assert reached < ITERATIONS, "the run finished before it was interrupted; make it longer"
    output = _repro(project)
    assert f"pretrain gvsl seed 0: resumed from iteration {reached}" in output
    executed = json.loads((project / "build" / "notebooks" / "pretrain.ipynb").read_text())
    assert f"resumed from iteration {reached}" in json.dumps(executed["cells"])
    ours, reference = _backbone(project), _backbone(uninterrupted)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[key], reference[key]) for key in ours), "the resumed backbone differs"
    log, reference_log = _training_log(project), _training_log(uninterrupted)
    assert log["step"].is_unique and log["step"].tolist() == list(range(ITERATIONS))  # no iteration repeated
    assert log["total"].tolist() == reference_log["total"].tolist()


@pytest.mark.slow
def test_a_changed_setting_starts_afresh_in_the_kept_folder(uninterrupted, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(uninterrupted, project, symlinks=True)
    settings = yaml.safe_load((project / "params.yaml").read_text())
    settings["pretrain"]["lr"] = 2e-4
    (project / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    output = _repro(project)
    assert "was written with other lr; starting afresh" in output and "resumed from" not in output
    assert _checkpoint_iteration(project) == ITERATIONS
    ours, reference = _backbone(project), _backbone(uninterrupted)
    assert not all(torch.equal(ours[key], reference[key]) for key in ours)


def _finished_runs(project: Path) -> list[Path]:
    return sorted((project / "build" / "transfer" / "gvsl").glob("*/*/inputs.json"))


@pytest.mark.slow
def test_an_interrupted_transfer_keeps_its_finished_runs(uninterrupted, tmp_path):
    reference, project = tmp_path / "reference", tmp_path / "project"
    for copy in (reference, project):
        shutil.copytree(uninterrupted, copy, symlinks=True)
    _repro(reference, "transfer@gvsl")
    runs = len(_finished_runs(reference))
    _interrupt(project, signal.SIGINT, "transfer@gvsl", until=lambda: len(_finished_runs(project)) >= 2)
    finished = len(_finished_runs(project))
    assert finished < runs, "every run finished before the interruption; make them longer"
    output = _repro(project, "transfer@gvsl")
    assert output.count("kept from an earlier run") == finished
    assert sum(": test " in line for line in output.splitlines()) == runs - finished
    for cell in ("SHC-linear", "SHC-finetune"):
        ours, theirs = (
            json.loads((p / "build" / "transfer" / "gvsl" / cell / "summary.json").read_text())
            for p in (project, reference)
        )
        for key in ("runs", "test", "val_curves", "per_case", "best_iterations"):
            assert ours[key] == theirs[key], (cell, key)
