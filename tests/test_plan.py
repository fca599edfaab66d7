"""gvsl plan (issue 23, item 4): jobs counted as the pipeline counts them, device-hours from the timings
table, memory per job, wall time over devices; and the ETA of the progress lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gvsl.cli import main
from gvsl.pipeline import load_settings
from gvsl.plan import load_timings, make_plan, padded_voxels
from gvsl.runtime import RunProgress, eta, format_duration

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "profiles" / "paper.yaml"
DEFAULT = ROOT / "params.yaml"


def _resolved(path) -> dict:
    return load_settings(path).to_mapping()


def _independent_counts(params: dict) -> tuple[int, int]:
    """Pre-trainings and transfer runs read straight off the (resolved) settings."""
    methods, seeds = params["pipeline"]["methods"], params["pretrain"]["seeds"]
    pretrainings = len([m for m in methods if m != "scratch"]) * len(seeds)
    transfer = sum(
        len(methods)
        * len(params["pipeline"]["tasks"])
        * len(seeds)
        * len(params["transfer"][p]["seeds"])
        * len(params["transfer"][p]["fractions"])
        for p in ("linear", "finetune")
    )
    return pretrainings, transfer


def _stage(plan, name):
    return next(stage for stage in plan.stages if stage.stage == name)


def test_paper_profile_plan_prints_jobs_and_device_hours(capsys):
    params = _resolved(PAPER)
    pretrainings, transfer = _independent_counts(params)
    # 12 pre-trainings (13 rows, scratch not trained, one seed), 13 × 4 × 2 × 3 seeds × 3 label fractions = 936 runs
    assert (pretrainings, transfer) == (12, 936)
    assert main(["plan", "--params", str(PAPER), "--devices", "8", "--device-kind", "h100"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line[:9].strip() in ("prepare", "pretrain", "transfer", "report", "total")
    }
    assert rows["pretrain"][1] == "12" and rows["transfer"][1] == "936" and rows["prepare"][1] == "5"
    assert float(rows["pretrain"][2]) > 10 and float(rows["transfer"][2]) > 10  # device-hours
    assert rows["pretrain"][4].startswith("GiB")
    assert "ESTIMATE" in out and "make gpu-check" in out


def test_plan_counts_jobs_as_the_pipeline_does():
    from gvsl.pipeline.stage_transfer import transfer_seed

    params = _resolved(DEFAULT)
    plan = make_plan(params, 2, "cpu")
    pretrainings, transfer = _independent_counts(params)
    assert len(_stage(plan, "pretrain").jobs) == pretrainings == 25
    # Table 1's 240 runs, and as many linear probes on a quarter and a half of the labels
    assert len(_stage(plan, "transfer").jobs) == transfer == 480
    assert transfer_seed(4, 0, [0]) == 4  # one transfer run per (pre-training seed, listed seed), as counted


def test_default_profile_plan(capsys):
    assert main(["plan", "--params", str(DEFAULT), "--devices", "2", "--device-kind", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "profile default on 2 ×" in out and "measured" in out
    plan = make_plan(_resolved(DEFAULT), 2, "cpu")
    # the default profile is a CPU run of minutes to an hour or two, not days
    assert 0.05 < plan.wall_hours < 5


def test_wall_time_scales_with_devices():
    params = _resolved(PAPER)
    one, eight, many = (make_plan(params, n, "h100") for n in (1, 8, 1000))
    assert one.device_hours == pytest.approx(eight.device_hours)
    assert one.wall_hours == pytest.approx(one.device_hours)
    assert eight.wall_hours < one.wall_hours / 4
    # with a device per job, the wall time of a DVC stage is its longest job, and DVC runs the stages one after
    # another: the one pre-training stage, then a transfer stage per method
    pretrain, transfer = _stage(many, "pretrain"), _stage(many, "transfer")
    assert pretrain.wall_hours(1000) == pytest.approx(max(j.seconds for j in pretrain.jobs) / 3600)
    methods = params["pipeline"]["methods"]
    per_method = [max(j.seconds for j in transfer.jobs if j.name.split(" ")[0].endswith(f"-{m}")) for m in methods]
    assert transfer.wall_hours(1000) == pytest.approx(sum(per_method) / 3600)


@pytest.mark.parametrize(
    "text, key",
    [
        ("pipeline: [", "not valid YAML"),
        ("- a list", "must hold a mapping of settings"),
        ("pipeline: {methods: [moco]}\n", "pipeline.methods: unknown 'moco'"),
    ],
)
def test_malformed_params_give_one_line(tmp_path, capsys, text, key):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert main(["plan", "--params", str(path), "--device-kind", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and str(path) in err


def test_malformed_value_names_its_key(tmp_path, capsys):
    params = _resolved(PAPER)
    params["pretrain"]["crop"] = [128, 128]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["plan", "--params", str(path), "--device-kind", "h100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pretrain.crop" in err


def test_unknown_device_kind(capsys):
    assert main(["plan", "--params", str(PAPER), "--device-kind", "tpu"]) == 2
    assert "no step times for device kind 'tpu'" in capsys.readouterr().err


def test_timings_table_is_well_formed():
    table = load_timings()
    assert {"cpu", "h100"} <= set(table["devices"])
    assert all(
        row["source"] in ("measured", "estimate") for entry in table["devices"].values() for row in entry["rows"]
    )
    assert "32,64,128,256,512,256,128,64,32" in table["costs"] and "8,16,32,64,128,64,32,16,8" in table["costs"]
    assert padded_voxels((40, 40, 40)) == 48**3


def test_eta_and_run_progress(capsys):
    assert eta(0, 10, 5.0) == "ETA unknown"
    assert eta(100, 400, 20.0) == "ETA 60 s" and eta(100, 400, 200.0) == "ETA 10 min"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min" and format_duration(3 * 86400) == "3 d 00 h"
    clock = iter([0.0, 60.0, 60.0, 120.0, 180.0])
    progress = RunProgress("transfer gvsl", 4, clock=lambda: next(clock))
    assert progress.finished("a") == "transfer gvsl: 1 of 4 runs done (a), 60 s elapsed, ETA 3 min"
    assert "ETA 2 min" in progress.finished("b", kept=True)  # a kept run adds nothing to the rate
    progress.finished("c")
    assert "4 of 4 runs done" in progress.finished("d") and "finished" in capsys.readouterr().out
