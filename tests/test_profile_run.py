"""A profile's pipeline in a copy of the project (`make repro-paper`): the copy, its refresh, its refusals.

The whole run in a copy is what `make rehearse-paper` does (tests/test_rehearsal.py, slow)."""

import json
import subprocess

import pytest
import yaml

from gvsl.errors import GVSLInputError
from gvsl.pipeline import load_settings
from gvsl.pipeline.profile import MARKER, claimed_folder, copy_project, fresh_folder, main
from tests.test_pipeline import ROOT


def test_a_copy_holds_the_resolved_settings_and_a_refresh_keeps_its_data_and_dvc_state(tmp_path):
    paper = load_settings(ROOT / "profiles" / "paper.yaml")
    copy = copy_project(ROOT, tmp_path / "project", paper)
    assert yaml.safe_load((copy / "params.yaml").read_text()) == paper.to_mapping()
    assert not (copy / "results").exists()  # it makes its own results
    (copy / "data.dvc").write_text("the copy's own import\n")
    (copy / "dvc.lock").write_text("the copy's own record\n")
    (copy / "build").mkdir()
    (copy / "build" / "run.txt").write_text("a finished run")
    (copy / "gvsl" / "removed_since.py").write_text("# a module the project no longer has\n")
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    again = copy_project(ROOT, copy, paper, keep=("data.dvc", "dvc.lock"))
    assert not (again / "gvsl" / "removed_since.py").exists()
    assert (again / "data.dvc").read_text() == "the copy's own import\n"
    assert (again / "dvc.lock").read_text() == "the copy's own record\n"
    assert (again / "build" / "run.txt").is_file()
    assert (again / "dvc.yaml").read_bytes() == (ROOT / "dvc.yaml").read_bytes()
    log = subprocess.run(["git", "log", "--oneline"], cwd=again, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 2  # a commit per copy: DVCLive needs one


def test_a_profile_run_and_a_rehearsal_never_take_each_others_folders(tmp_path):
    run = claimed_folder(tmp_path / "paper", "profile")
    (run / "project").mkdir()
    with pytest.raises(GVSLInputError, match="holds a profile run, not a rehearsal one"):
        fresh_folder(run, "rehearsal")
    assert (run / "project").is_dir()
    assert json.loads((claimed_folder(run, "profile") / MARKER).read_text())["kind"] == "profile"
    earlier = tmp_path / "rehearsal"
    earlier.mkdir()
    (earlier / "gvsl-rehearsal.json").write_text("{}")  # the rehearsal's mark before profile runs shared it
    assert not any(fresh_folder(earlier, "rehearsal").glob("gvsl-rehearsal.json"))


def test_the_profile_run_refuses_a_folder_it_did_not_make_and_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    assert main(["profiles/paper.yaml", "--data", str(tmp_path), "--dest", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert "was not made by an earlier profile run" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    assert main(["profiles/paper.yaml", "--data", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "new")]) == 2
    assert "no such folder of datasets" in capsys.readouterr().err
    assert (tmp_path / "new" / MARKER).is_file() and not (tmp_path / "new" / "project").exists()


def test_make_repro_paper_leaves_the_tracked_settings_alone():
    dry_run = subprocess.run(["make", "-n", "repro-paper", "DATA=/d"], cwd=ROOT, capture_output=True, text=True)
    assert "gvsl.pipeline.profile profiles/paper.yaml --data" in dry_run.stdout
    assert "params.yaml" not in dry_run.stdout


def test_an_empty_data_folder_is_refused(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["profiles/paper.yaml", "--data", ""]) == 2
    assert "--data: name the folder of the datasets" in capsys.readouterr().err
