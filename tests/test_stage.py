"""`python -m gvsl.stage` runs a stage notebook with the resolved settings injected, on a kernel reached over IPC."""

import json
import subprocess
import sys

import nbformat
import yaml

from gvsl.pipeline import load_settings


def _notebook(path, body):
    parameters = nbformat.v4.new_code_cell("task = None\nsettings = None")
    parameters.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


def _stage(tmp_path, notebook, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gvsl.stage",
            str(notebook),
            str(tmp_path / "out" / "run.ipynb"),
            "-f",
            str(tmp_path / "params.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_stage_injects_the_resolved_settings_and_overrides_without_the_tcp_warning(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": {"channels": [8] * 9}, "profile": "mine"}))
    body = "import json; print(json.dumps({'task': task, 'settings': settings}))"
    done = _stage(tmp_path, _notebook(tmp_path / "in.ipynb", body), "-p", "task", "SAC")
    assert done.returncode == 0, done.stderr
    assert "TCP" not in done.stderr and "encryption" not in done.stderr
    assert "unknown parameter" not in done.stderr
    executed = nbformat.read(tmp_path / "out" / "run.ipynb", as_version=4)
    printed = json.loads(executed.cells[-1].outputs[0]["text"])
    # every setting, the file's over the defaults: what the notebook builds its typed settings from
    assert printed == {"task": "SAC", "settings": load_settings(tmp_path / "params.yaml").to_mapping()}
    assert printed["settings"]["model"]["channels"] == [8] * 9 and printed["settings"]["pretrain"]["lr"] == 1e-4
    assert not any(p.name.startswith("kernel") for p in tmp_path.iterdir())  # no sockets left in the project


def test_a_failing_cell_ends_the_stage_with_its_error(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: mine\n")
    notebook = _notebook(tmp_path / "in.ipynb", "raise RuntimeError('cohort missing')")
    done = _stage(tmp_path, notebook)
    assert done.returncode == 1
    assert "cohort missing" in done.stderr and "in.ipynb failed" in done.stderr
    assert (tmp_path / "out" / "run.ipynb").is_file()


def test_a_missing_parameters_file_is_one_line(tmp_path):
    done = _stage(tmp_path, tmp_path / "in.ipynb")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gvsl.stage: error: {tmp_path / 'params.yaml'}: no such settings file"]


def test_a_bad_setting_stops_the_stage_before_its_notebook_runs(tmp_path):
    (tmp_path / "params.yaml").write_text("pretrain: {lr: -1}\n")
    done = _stage(tmp_path, _notebook(tmp_path / "in.ipynb", "print('ran')"))
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.strip().splitlines() == [
        f"gvsl.stage: error: {tmp_path / 'params.yaml'}: pretrain.lr must be a positive number, got -1.0"
    ]
