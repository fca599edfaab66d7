"""Every expected error is one line: each command line option and params.yaml key with a bad value.

The command line ends such an error with ``gvsl <command>: error: …`` on one line and exit status 2;
a bad ``params.yaml`` value raises a :class:`GVSLInputError` that names its key.
"""

import copy
from pathlib import Path

import pytest
import yaml

from gvsl import pipeline
from gvsl.cli import main
from gvsl.data.prepare import prepare
from gvsl.errors import GVSLInputError
from gvsl.pipeline import stage_pretrain
from gvsl.pipeline.cluster import executor_settings
from gvsl.pipeline.devices import stage_devices

ROOT = Path(__file__).resolve().parent.parent
BAD_WIDTHS = "4,8,16,32,64,32,16,8,4"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    pretrain = prepare("phantom-ct", root / "pretrain", task="pretrain", shape=(32, 32, 32), subjects=2)
    shc = prepare("phantom-ct", root / "SHC", task="SHC", shape=(40, 40, 40), subjects=6)
    (root / "not-a-checkpoint.pt").write_text("hello")
    return {"p": str(pretrain), "s": str(shc), "bad": str(root / "not-a-checkpoint.pt"), "root": root}


PRETRAIN = "pretrain --data {p} --out {out} --crop 32 32 32 --iterations 2"
TRANSFER = "transfer --data {s} --out {out} --protocol linear --iterations 2"
CLI_ERRORS = [
    ("prepare --source phantom-ct --out {out} --task SHC --shape 4 4 4", "shape must be three sizes of at least 8"),
    ("prepare --source phantom-ct --out {out} --task SHC --subjects 0", "subjects must be >= 1"),
    ("prepare --source phantom-ct --out {out} --task SHC --spacing -1", "spacing: expecting one or three positive"),
    ("prepare --source phantom-ct --out {out} --task SHC --spacing 1 2", "spacing: expecting one or three positive"),
    ("prepare --source phantom-ct --out {out} --task SHC --roi 0 10 10", "roi: expecting one or three positive"),
    ("prepare --source phantom-ct --out {out} --task SHC --window-offset nan", "window offset must be a finite"),
    ("prepare --source mmwhs --out {out}", "needs --root"),
    ("prepare --source mmwhs --out {out} --root nowhere", "input folder not found"),
    ("prepare --source phantom-ct --out {p} --task SHC", "folder exists and is not empty"),
    ("pretrain --data nowhere --out {out}", "is nowhere a prepared dataset"),
    ("pretrain --data {p} --out {out} --crop 64 64 64", "is larger than the volume"),
    (PRETRAIN + " --iterations 0", "iterations must be >= 1"),
    (PRETRAIN + " --batch-size 0", "batch_size must be >= 1"),
    (PRETRAIN + " --channels 8,8,8", "expecting nine widths"),
    (PRETRAIN + " --channels a,b", "nine comma-separated integers"),
    (PRETRAIN + f" --channels {BAD_WIDTHS}", "channels[0] must be a multiple of its GroupNorm group count"),
    (PRETRAIN + " --lr -1", "lr must be a positive number"),
    (PRETRAIN + " --lr-schedule cosine --warmup 500", "warmup (500) must be shorter than iterations"),
    (PRETRAIN + " --crop-jitter -1", "crop_jitter must be >= 0"),
    (PRETRAIN + " --eval-every 0", "eval_every must be >= 1"),
    (PRETRAIN + " --checkpoint-every 0", "checkpoint_every must be >= 1"),
    (PRETRAIN + " --option nothing=1", "pretrain.options.gvsl: unknown settings ['nothing']"),
    (PRETRAIN + " --option novalue", "--option: expecting KEY=VALUE"),
    (PRETRAIN + " --option affine_channels=4", "affine_channels must be an integer >= 8"),
    (PRETRAIN + " --option local_head_channels=9", "local_head_channels (restoration) must be a multiple"),
    (PRETRAIN + " --method simclr --option temperature=-1", "temperature must be > 0"),
    (PRETRAIN + " --device cuda", "CUDA is not available"),
    (PRETRAIN + " --device tpu", "device: "),
    (PRETRAIN + " --heldout nowhere", "is nowhere a prepared dataset"),
    (PRETRAIN + " --heldout {s} --heldout-split test", "held-out split must not be 'test'"),
    (PRETRAIN + " --heldout {s} --heldout-split val", "held-out evaluation needs two"),
    ("transfer --data nowhere --out {out} --protocol linear", "is nowhere a prepared dataset"),
    ("transfer --data {p} --out {out} --protocol linear", "has no transfer protocol"),
    (TRANSFER + " --init missing.pt", "missing.pt: checkpoint file not found"),
    (TRANSFER + " --init {bad}", "not a readable weights-only PyTorch checkpoint"),
    (TRANSFER + " --iterations 0", "iterations must be >= 1"),
    (TRANSFER + " --val-every 0", "val_every must be >= 1"),
    (TRANSFER + " --lr 0", "lr must be a positive number"),
    (TRANSFER + " --crop 99 99 99", "is larger than the volume"),
    (TRANSFER + " --plateau-window 2", "plateau_window must lie in (0, 1)"),
    (TRANSFER + " --plateau-delta -1", "plateau_delta must be a number >= 0"),
    (TRANSFER + " --min-iterations -1", "min_iterations must be >= 0"),
    (TRANSFER + f" --channels {BAD_WIDTHS}", "channels[0] must be a multiple of its GroupNorm group count"),
    (TRANSFER + " --device cuda", "CUDA is not available"),
    ("export --bundle {out} --backbone missing.pt", "--backbone: no file missing.pt"),
    ("export --bundle {out} --backbone {bad}", "not a readable weights-only PyTorch checkpoint"),
]


@pytest.mark.parametrize(("command", "message"), CLI_ERRORS, ids=[c for c, _ in CLI_ERRORS])
def test_a_bad_option_ends_in_one_line_and_status_2(command, message, data, tmp_path, capsys):
    argv = command.format(out=tmp_path / "out", **data).split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gvsl {argv[0]}: error: ") and message in err, err


def _params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _set(params, dotted, value):
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node[key]
    node[last] = value
    return params


PARAMS_ERRORS = [
    ("model.channels", [int(w) for w in BAD_WIDTHS.split(",")], "pretrain", "params.yaml: pretrain (gvsl): channels: "),
    ("model.channels", [8, 8, 8], "pretrain", "expecting nine widths"),
    ("model.channels", [int(w) for w in BAD_WIDTHS.split(",")], "scratch", "params.yaml: model.channels: channels[0]"),
    ("pretrain.iterations", 0, "pretrain", "params.yaml: pretrain (gvsl): iterations must be >= 1"),
    ("pretrain.lr", -1.0, "pretrain", "lr must be a positive number"),
    ("pretrain.lr_schedule", "linear", "pretrain", "lr_schedule: unknown 'linear'"),
    ("pretrain.crop", [4, 4, 4], "pretrain", "crop: expecting three sizes >= 8"),
    ("pretrain.seeds", [], "pretrain", "pretrain.seeds must be a non-empty list"),
    ("pretrain.seeds", [0, 0], "pretrain", "pretrain.seeds repeats a seed"),
    ("pretrain.options", {"gvsl": {"affine_channels": 4}}, "pretrain", "affine_channels must be an integer >= 8"),
    ("pretrain.options", {"gvsl": {"local_head_channels": 9}}, "pretrain", "local_head_channels (restoration)"),
    ("pretrain.options", {"genesis": {}}, "pretrain", "pretrain.options: unknown methods ['genesis']"),
    ("pretrain.options", [1], "pretrain", "pretrain.options must map methods to their settings"),
    ("pretrain.heldout", {"task": "SHC", "split": "test", "pairs": 2}, "heldout", "must not be 'test'"),
    ("pretrain.heldout", {"task": "SHC"}, "heldout", "must be a mapping with keys task, split, pairs"),
    ("pretrain.processes", 0, "processes", "pretrain.processes must be an integer >= 1 or 'auto'"),
    ("pretrain.devices", ["cuda:99"], "devices", "params.yaml: pretrain.devices: 'cuda:99' is not a visible device"),
    ("pretrain.device", "cpu", "pretrain", "params.yaml: pretrain.device is replaced by pretrain.devices"),
    ("transfer.linear.device", "cpu", "transfer", "transfer.linear.device is replaced by transfer.devices"),
    (
        "executor.kind",
        "ray",
        "executor",
        "params.yaml: executor.kind must be one of ['local', 'submitit-local', 'slurm']",
    ),
    ("executor", {"kind": "slurm"}, "executor", "params.yaml: executor.partition: the SLURM partition is required"),
    (
        "executor",
        {"kind": "slurm", "partition": "gpu", "gpus": 2},
        "executor",
        "executor (slurm): unknown settings ['gpus']",
    ),
    (
        "executor",
        {"kind": "slurm", "partition": "gpu", "gpus_per_job": -1},
        "executor",
        "executor.gpus_per_job must be",
    ),
    (
        "pipeline.methods",
        ["scratch", "genesis"],
        "methods",
        "params.yaml: pipeline.methods must be distinct methods of",
    ),
    ("prepare.tasks.SHC", {"source": "phantom-ct", "colour": 1}, "prepare", "unknown settings ['colour']"),
    ("prepare.tasks.SHC", {"shape": [8, 8, 8]}, "prepare", "prepare.tasks.SHC: missing 'source'"),
    (
        "prepare.tasks.SHC",
        {"source": "phantom-ct", "shape": [4, 4, 4]},
        "prepare",
        "params.yaml: prepare.tasks.SHC: phantom-ct: shape must be three sizes of at least 8",
    ),
    ("transfer.linear.lr", 0.0, "transfer", "params.yaml: transfer.linear (SHC): lr must be a positive number"),
    ("transfer.linear.plateau_window", 2.0, "transfer", "plateau_window must lie in (0, 1)"),
    ("transfer.linear.seeds", [], "transfer", "transfer.linear.seeds must be a non-empty list"),
    ("transfer.finetune.class_weighting", "all", "transfer", "class_weighting"),
    ("pipeline.tasks", ["SHC", "XYZ"], "transfer", "pipeline.tasks: unknown task 'XYZ'"),
]


@pytest.mark.parametrize(
    ("key", "value", "stage", "message"), PARAMS_ERRORS, ids=[f"{k}={v}" for k, v, _, _ in PARAMS_ERRORS]
)
def test_a_bad_params_value_names_its_key(key, value, stage, message, data, tmp_path):
    params = _set(copy.deepcopy(_params()), key, value)
    build = tmp_path / "build"
    (build / "prepared").mkdir(parents=True)
    (build / "prepared" / "SHC").symlink_to(data["s"])
    with pytest.raises(GVSLInputError) as raised:
        if stage == "pretrain":
            pipeline.pretrain_configs("gvsl", params)
        elif stage == "scratch":
            params["pipeline"]["methods"] = ["scratch"]
            pipeline.pretrain_stage(params, build)
        elif stage == "heldout":
            stage_pretrain._load_heldout(params["pretrain"]["heldout"], (32, 32, 32), build)
        elif stage == "processes":
            pipeline.layout.process_count(params, "pretrain")
        elif stage == "methods":
            pipeline.pretrain_stage(params, build)
        elif stage == "devices":
            stage_devices(params, "pretrain")
        elif stage == "executor":
            executor_settings(params)
        elif stage == "prepare":
            pipeline.prepare_stage("SHC", params, build)
        else:
            params["pipeline"]["tasks"] = [t for t in params["pipeline"]["tasks"] if t in ("SHC", "XYZ")]
            pipeline.transfer_jobs("gvsl", params, build)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
