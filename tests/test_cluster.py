"""A stage's jobs through a cluster engine (submitit): the settings, no cost to the default, and (slow) the tiny
pipeline through submitit's own local cluster with the results of the default's local processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gvsl.pipeline.cluster import executor_settings
from tests.test_pipeline import TINY, dvc, make_project


def test_the_default_executor_is_local_and_never_imports_submitit():
    code = (
        "import sys; from gvsl.pipeline import compose; from gvsl.pipeline.workers import run_jobs; "
        "print(run_jobs(lambda job, device: (job, device), [1], "
        "compose({'executor': {'kind': 'local'}, 'transfer': {'processes': 1, 'devices': ['cpu']}}), 'transfer'), "
        "'submitit' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[(1, 'cpu')] False"
    assert executor_settings({"kind": "local"}) == {"kind": "local"}


def test_slurm_settings_get_their_defaults():
    settings = executor_settings({"kind": "slurm", "partition": "gpu"})
    assert (settings["gpus_per_job"], settings["cpus_per_job"], settings["max_parallel"]) == (1, 8, "auto")


SMALL = {
    **TINY,
    "pipeline": {"tasks": ["SHC"], "methods": ["scratch", "no_fundament", "gvsl"]},
    "transfer": {**TINY["transfer"], "linear": {**TINY["transfer"]["linear"], "seeds": [0]}},
}


def _results(project: Path) -> dict:
    """What a run produced that must not depend on where its jobs ran: Table 1's metrics, every transfer
    run's numbers and every backbone's weights."""
    found = {"metrics.json": (project / "results" / "metrics.json").read_bytes()}
    for path in sorted((project / "build" / "transfer").glob("*/*/*/metrics.json")):
        record = json.loads(path.read_text())
        found[str(path.relative_to(project))] = {
            k: record[k] for k in ("test", "per_case", "val_curve", "best_iteration")
        }
    for path in sorted((project / "build" / "pretrain").glob("*/*/backbone.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        found[str(path.relative_to(project))] = b"".join(t.numpy().tobytes() for t in state.values())
    return found


@pytest.mark.slow
def test_the_tiny_pipeline_through_submitits_local_cluster_gives_the_local_results(tmp_path):
    pytest.importorskip("submitit", reason="make test-slow installs requirements-submitit.lock")
    local = make_project(tmp_path / "local", SMALL)
    dvc(local, "repro")
    engine = make_project(tmp_path / "engine", {**SMALL, "executor": {"kind": "submitit-local"}})
    output = dvc(engine, "repro")
    assert "through submitit (submitit-local)" in output
    jobs = list((engine / "build" / "submitit").glob("*/*_result.pkl"))
    # 2 methods × 2 seeds pre-trained; 3 methods × 2 seeds transferred, each by a linear probe on half and on all of
    # the labels and by fine-tuning
    assert len(jobs) == 2 * 2 + 3 * 2 * (2 + 1)
    ours, theirs = _results(engine), _results(local)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for key in ours:
        assert ours[key] == theirs[key], key
