"""The CLI chain a user runs: prepared dataset -> gvsl pretrain -> gvsl transfer."""

import json

import numpy as np
import pytest

from gvsl.checkpoint import load_backbone
from gvsl.cli import main, parse_channels
from gvsl.data.dataset import DatasetInfo, DatasetWriter

CHANNELS = "8,16,16,16,16,16,16,8,8"


def _segmentation_dataset(root, task, n=(3, 2, 2), shape=(20, 20, 20), seed=0):
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root, task)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    for split, count in zip(("train", "val", "test"), n):
        for i in range(count):
            centre = rng.uniform(7, 13, size=(3, 1, 1, 1))
            label = (np.sqrt(((grid - centre) ** 2).sum(0)) < 5).astype(np.uint8)
            label[(label == 1) & (grid[0] > centre[0, 0])] = 2
            image = (0.2 + 0.3 * label + 0.05 * rng.standard_normal(shape)).astype(np.float32)
            writer.add(f"{split}{i}", split, image, np.eye(4), label=label)
    writer.finish(
        DatasetInfo(
            task=task, classes=("upper", "lower"), spacing=(1.0, 1.0, 1.0), source="unit-test", window={"kind": "none"}
        )
    )
    return root


def test_pretrain_then_transfer_from_the_command_line(tmp_path, capsys):
    data = _segmentation_dataset(tmp_path / "SHC", "SHC")
    code = main(
        [
            "pretrain",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "pre"),
            "--iterations",
            "2",
            "--crop",
            "16",
            "16",
            "16",
            "--channels",
            CHANNELS,
            "--device",
            "cpu",
            "--checkpoint-every",
            "1",
        ]
    )
    assert code == 0
    assert load_backbone(tmp_path / "pre" / "backbone.pt").channels == parse_channels(CHANNELS)
    code = main(
        [
            "transfer",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "tr"),
            "--init",
            str(tmp_path / "pre" / "backbone.pt"),
            "--protocol",
            "linear",
            "--iterations",
            "3",
            "--val-every",
            "2",
            "--crop",
            "16",
            "16",
            "16",
            "--lr",
            "1e-2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "tr" / "metrics.json").read_text())
    assert metrics["task"] == "SHC" and metrics["metric"] == "mean_dice"
    assert 0.0 <= metrics["test"]["mean_dice"] <= 1.0
    assert [i for i, _ in metrics["val_curve"]] == [2, 3]
    assert "SHC linear test mean_dice" in capsys.readouterr().out


def test_pretrain_takes_the_similarity_as_an_option(tmp_path):
    data = _segmentation_dataset(tmp_path / "SHC", "SHC")
    argv = ["pretrain", "--data", str(data), "--out", str(tmp_path / "pre"), "--iterations", "2", "--crop"]
    argv += ["16", "16", "16", "--channels", CHANNELS, "--device", "cpu", "--option", "similarity=mi"]
    assert main(argv) == 0
    assert (tmp_path / "pre" / "dvclive" / "plots" / "metrics" / "train" / "mi.tsv").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["pretrain", "--data", "{data}", "--out", "{out}", "--option", "similarity=ssim"],
            "similarity: unknown 'ssim'; valid: ['ncc', 'mi']",
        ),
        (["pretrain", "--data", "{missing}", "--out", "{out}", "--iterations", "1"], "not found"),
        (["pretrain", "--data", "{data}", "--out", "{out}", "--channels", "8,16"], "expecting nine widths"),
        (
            [
                "pretrain",
                "--data",
                "{data}",
                "--out",
                "{out}",
                "--crop",
                "32",
                "32",
                "32",
                "--channels",
                CHANNELS,
                "--iterations",
                "1",
            ],
            "is larger than the volume",
        ),
        (
            ["transfer", "--data", "{data}", "--out", "{out}", "--init", "{missing}", "--protocol", "linear"],
            "checkpoint file not found",
        ),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    data = _segmentation_dataset(tmp_path / "SHC", "SHC")
    argv = [a.format(data=data, out=tmp_path / "out", missing=tmp_path / "missing") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith(f"gvsl {argv[0]}: error:") and len(err.splitlines()) == 1
