"""requirements.lock pins every package, satisfies pyproject.toml, and is what this environment runs."""

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _lock(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][^=\s]*", line), f"not an exact pin: {line!r}"
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def _project_requirements(extra: str = "all") -> list[Requirement]:
    """The dependencies of pyproject.toml with every extra of ``extra`` (`all`: the extras `make env` installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    pending, seen = [extra], set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending += [e for e in requirement.extras if e not in seen]
            else:
                requirements.append(requirement)
    return requirements


def test_the_lock_satisfies_every_requirement_of_the_project():
    pins = _lock()
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is required by pyproject.toml but not locked; run `make lock`"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{requirement} is not met by the locked {pins[name]}; run `make lock`"
        )


def test_each_add_on_lock_adds_its_extra_to_the_main_lock_without_moving_a_pin():
    # make lab and make test-slow install these on top of requirements.lock (Makefile)
    main = _lock()
    for extra in ("itk", "lab", "submitit"):
        add_on = _lock(f"requirements-{extra}.lock")
        assert not set(add_on) & set(main), f"requirements-{extra}.lock repeats pins of requirements.lock"
        pins = {**main, **add_on}
        for requirement in _project_requirements(extra):
            name = canonicalize_name(requirement.name)
            assert name in pins and requirement.specifier.contains(Version(pins[name]), prereleases=True), (
                f"{requirement} ({extra} extra) is not met by the locks; run `make lock`"
            )
    # JupyterLab's server stack makes every MONAI import 2.6 s slower (tools/lock.py): not in the main lock
    assert "jupyterlab" not in main and "rfc3987-syntax" not in main


def test_this_environment_runs_the_locked_versions():
    mismatched = {}
    for name, version in _lock().items():
        installed = Version(metadata.version(name))
        if installed.public != Version(version).public:  # the CPU wheel of torch carries a "+cpu" label
            mismatched[name] = (version, str(installed))
    assert not mismatched, f"installed versions differ from requirements.lock (locked, installed): {mismatched}"


def test_the_conda_environment_installs_the_lock():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict))
    assert "-r requirements.lock" in pip_section


def test_the_commit_is_dirty_for_code_changes_not_for_what_the_pipeline_rewrites(tmp_path):
    from gvsl.provenance import git_commit

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    (tmp_path / "results").mkdir()
    for name in ("dvc.lock", "results/table1.csv", "params.yaml"):
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    head = git("rev-parse", "HEAD")
    (tmp_path / "dvc.lock").write_text("b\n")  # dvc repro rewrites these as its stages finish
    (tmp_path / "results" / "table1.csv").write_text("b\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "params.yaml").write_text("b\n")
    assert git_commit(tmp_path) == f"{head}+dirty"


def test_changed_inputs_names_every_difference_in_the_current_runs_order():
    from gvsl.provenance import changed_inputs

    same = {"config": {"lr": 1e-3, "crop": [32, 32, 32]}, "data": "abc"}
    assert changed_inputs(same, json_round_trip(same)) == []
    saved = {"data": "abc", "code": "old", "dropped": 1}
    assert changed_inputs(saved, {"code": "new", "data": "abc", "added": 2}) == ["code", "added", "dropped"]


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))


def test_a_dvclive_run_ending_beside_another_survives_their_race_on_the_signal_file(tmp_path):
    from gvsl.runtime import end_live

    class Ending:
        def __init__(self, missing):
            self.missing = missing

        def end(self):
            # what dvclive.vscode.cleanup_dvclive_step_completed raises when another run removed the file first
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / self.missing))

    end_live(Ending(".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED"))
    with pytest.raises(FileNotFoundError):
        end_live(Ending("dvclive/metrics.json"))
