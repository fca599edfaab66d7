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
    ("prepare --source phantom-ct --out {out} --task SHC --subjects 0", "subjects must be an integer >= 1"),
    ("prepare --source phantom-ct --out {out} --task SHC --spacing -1", "spacing must be positive, got -1.0"),
    ("prepare --source phantom-ct --out {out} --task SHC --spacing 1 2", "spacing must be a list of 3 numbers or null"),
    ("prepare --source phantom-ct --out {out} --task SHC --roi-mm 0 10 10", "roi_mm must be positive, got 0.0"),
    (
        "prepare --source phantom-ct --out {out} --task SHC --window-offset nan",
        "window_offset must be a finite number, got nan",
    ),
    ("prepare --source mmwhs --out {out}", "needs --root"),
    ("prepare --source mmwhs --out {out} --root nowhere", "input folder not found"),
    ("prepare --source phantom-ct --out {p} --task SHC", "folder exists and is not empty"),
    ("pretrain --data nowhere --out {out}", "is nowhere a prepared dataset"),
    ("pretrain --data {p} --out {out} --crop 64 64 64", "is larger than the volume"),
    (PRETRAIN + " --iterations 0", "iterations must be an integer >= 1, got 0"),
    (PRETRAIN + " --batch-size 0", "batch_size must be an integer >= 1, got 0"),
    (PRETRAIN + " --channels 8,8,8", "expecting nine widths"),
    (PRETRAIN + " --channels a,b", "channels must be a list of integers, got ['a', 'b']"),
    (PRETRAIN + f" --channels {BAD_WIDTHS}", "channels[0] must be a multiple of its GroupNorm group count"),
    (PRETRAIN + " --lr -1", "lr must be a positive number"),
    (PRETRAIN + " --lr-schedule cosine --warmup 500", "warmup (500) must be shorter than iterations"),
    (PRETRAIN + " --crop-jitter -1", "crop_jitter must be an integer >= 0, got -1"),
    (PRETRAIN + " --eval-every 0", "eval_every must be an integer >= 1, got 0"),
    (PRETRAIN + " --checkpoint-every 0", "checkpoint_every must be an integer >= 1, got 0"),
    (PRETRAIN + " --option nothing=1", "pretrain.options.gvsl: unknown settings ['nothing']"),
    (PRETRAIN + " --option novalue", "--option: expecting KEY=VALUE"),
    (PRETRAIN + " --option affine_channels=4", "affine_channels must be an integer >= 8"),
    (PRETRAIN + " --option local_head_channels=9", "local_head_channels (restoration) must be a multiple"),
    (PRETRAIN + " --method simclr --option temperature=-1", "temperature must be > 0"),
    (PRETRAIN + " --device cuda", "CUDA is not available"),
    (PRETRAIN + " --device tpu", "device: "),
    (PRETRAIN + " --heldout nowhere", "is nowhere a prepared dataset"),
    (PRETRAIN + " --heldout {s} --heldout-split test", "heldout.split: unknown 'test'; valid: ['train', 'val']"),
    (PRETRAIN + " --heldout {s} --heldout-split val", "held-out evaluation needs two"),
    ("transfer --data nowhere --out {out} --protocol linear", "is nowhere a prepared dataset"),
    ("transfer --data {p} --out {out} --protocol linear", "has no transfer protocol"),
    (TRANSFER + " --init missing.pt", "missing.pt: checkpoint file not found"),
    (TRANSFER + " --init {bad}", "not a readable weights-only PyTorch checkpoint"),
    (TRANSFER + " --iterations 0", "iterations must be an integer >= 1, got 0"),
    (TRANSFER + " --val-every 0", "val_every must be an integer >= 1, got 0"),
    (TRANSFER + " --lr 0", "lr must be a positive number"),
    (TRANSFER + " --crop 99 99 99", "is larger than the volume"),
    (TRANSFER + " --plateau-window 2", "plateau_window must be in (0, 1), got 2.0"),
    (TRANSFER + " --plateau-delta -1", "plateau_delta must be a number >= 0, got -1.0"),
    (TRANSFER + " --min-iterations -1", "min_iterations must be an integer >= 0, got -1"),
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
        node = node.setdefault(key, {})
    node[last] = value
    return params


BAD = [int(w) for w in BAD_WIDTHS.split(",")]
# (key, bad value, where it is found, the error): "settings" when params.yaml is read; the others later, where
# the error needs what the settings cannot know (the visible GPUs, the prepared data, a method's heads)
PARAMS_ERRORS = [
    ("model.channels", BAD, "settings", "params.yaml: model.channels: channels[0] must be a multiple of its GroupNorm"),
    ("model.channels", [8, 8, 8], "settings", "params.yaml: model.channels: expecting nine widths"),
    ("model.channels", "wide", "settings", "params.yaml: model.channels must be a list of integers, got 'wide'"),
    ("pretrain.iterations", 0, "settings", "params.yaml: pretrain.iterations must be an integer >= 1, got 0"),
    ("pretrain.lr", -1.0, "settings", "params.yaml: pretrain.lr must be a positive number, got -1.0"),
    ("pretrain.lr_schedule", "linear", "settings", "params.yaml: pretrain.lr_schedule: unknown 'linear'"),
    ("pretrain.crop", [4, 4, 4], "settings", "params.yaml: pretrain.crop must be at least 8 voxels, got 4"),
    ("pretrain.crop", [32, 32], "settings", "params.yaml: pretrain.crop must be a list of 3 integers, got [32, 32]"),
    ("pretrain.seeds", [], "settings", "params.yaml: pretrain.seeds must not be empty"),
    ("pretrain.seeds", [0, 0], "settings", "params.yaml: pretrain.seeds repeats [0]"),
    ("pretrain.seeds", [-1], "settings", "params.yaml: pretrain.seeds must be an integer >= 0, got -1"),
    ("pretrain.options", {"gvsl": {"affine_channels": 4}}, "settings", "affine_channels must be an integer >= 8"),
    ("pretrain.options", {"gvsl": {"local_head_channels": 9}}, "pretrain", "local_head_channels (restoration)"),
    ("pretrain.options", {"genesis": {}}, "settings", "params.yaml: pretrain.options: unknown 'genesis'"),
    ("pretrain.options", [1], "settings", "params.yaml: pretrain.options must be a mapping, got [1]"),
    ("pretrain.heldout", {"split": "test"}, "settings", "params.yaml: pretrain.heldout.split: unknown 'test'"),
    ("pretrain.heldout", {"pairs": 0}, "settings", "params.yaml: pretrain.heldout.pairs must be an integer >= 1"),
    ("pretrain.heldout", {"task": "SAC"}, "heldout", "params.yaml: pretrain.heldout: "),
    ("pretrain.processes", 0, "settings", "params.yaml: pretrain.processes must be an integer >= 1 or 'auto', got 0"),
    ("pretrain.devices", "gpu", "settings", "params.yaml: pretrain.devices must be auto or a list of devices"),
    ("pretrain.devices", ["cuda:99"], "devices", "params.yaml: pretrain.devices: 'cuda:99' is not a visible device"),
    ("pretrain.device", "cpu", "settings", "params.yaml: pretrain: unknown settings ['device']"),
    ("transfer.linear.device", "cpu", "settings", "params.yaml: transfer.linear: unknown settings ['device']"),
    ("executor", {"kind": "ray"}, "settings", "executor.kind must be one of ['local', 'submitit-local', 'slurm']"),
    ("executor", {"kind": "slurm"}, "settings", "executor.partition: the SLURM partition is required"),
    ("executor", {"kind": "slurm", "partition": "gpu", "gpus": 2}, "settings", "executor (slurm): unknown settings"),
    (
        "executor",
        {"kind": "slurm", "partition": "gpu", "gpus_per_job": -1},
        "settings",
        "executor.gpus_per_job must be",
    ),
    ("pipeline.methods", ["scratch", "genesis"], "settings", "params.yaml: pipeline.methods: unknown 'genesis'"),
    ("pipeline.methods", ["gvsl", "gvsl"], "settings", "params.yaml: pipeline.methods repeats ['gvsl']"),
    ("pipeline.tasks", ["SHC", "XYZ"], "settings", "params.yaml: pipeline.tasks: unknown 'XYZ'"),
    ("prepare.tasks.SHC", {"source": "phantom-ct", "colour": 1}, "settings", "prepare.tasks.SHC: unknown settings"),
    ("prepare.tasks.MSD", {"shape": [8, 8, 8]}, "settings", "params.yaml: prepare.tasks.MSD: missing 'source'"),
    (
        "prepare.tasks.SHC",
        {"source": "phantom-ct", "shape": [4, 4, 4]},
        "prepare",
        "params.yaml: prepare.tasks.SHC: phantom-ct: shape must be three sizes of at least 8",
    ),
    ("prepare.seed", -2, "settings", "params.yaml: prepare.seed must be an integer >= 0, got -2"),
    ("transfer.linear.lr", 0.0, "settings", "params.yaml: transfer.linear.lr must be a positive number, got 0.0"),
    ("transfer.linear.plateau_window", 2.0, "settings", "transfer.linear.plateau_window must be in (0, 1), got 2.0"),
    ("transfer.linear.seeds", [], "settings", "params.yaml: transfer.linear.seeds must not be empty"),
    ("transfer.finetune.class_weighting", "all", "settings", "transfer.finetune.class_weighting: unknown 'all'"),
    ("transfer.finetune.iterations", {"SHC": 0}, "settings", "transfer.finetune.iterations.SHC must be an integer"),
    ("transfer.finetune.iterations", {"SAC": 90}, "transfer", "params.yaml: transfer.finetune: iterations: no cap for"),
    ("transfer.linear.crop", {"SHC": [0, 8, 8]}, "settings", "transfer.linear.crop.SHC must be an integer >= 1, got 0"),
    ("report.fig6", {"protocol": "probe"}, "settings", "params.yaml: report.fig6.protocol: unknown 'probe'"),
    ("profile", ["x"], "settings", "params.yaml: profile must be text, got ['x']"),
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
        settings = pipeline.compose(params)
        assert stage != "settings", f"{key}={value!r} was accepted"
        if stage == "pretrain":
            settings.pretrain_configs("gvsl")
        elif stage == "heldout":
            stage_pretrain._load_heldout(settings.pretrain.heldout, (32, 32, 32), build)
        elif stage == "devices":
            stage_devices(settings.pretrain, "pretrain")
        elif stage == "prepare":
            pipeline.prepare_stage("SHC", settings, build)
        else:
            pipeline.transfer_jobs("gvsl", pipeline.compose(params, {"pipeline": {"tasks": ["SHC"]}}), build)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
