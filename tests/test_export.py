"""`gvsl export --bundle`: a pre-trained backbone as a MONAI Bundle that MONAI's own tools load and check."""

import json
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

from gvsl.checkpoint import load_backbone, save_backbone
from gvsl.cli import main
from gvsl.data.prepare import prepare
from gvsl.nets import UNet3D

TINY = (8, 8, 8, 8, 16, 8, 8, 8, 8)
#: what MONAI's bundle schema requires of configs/metadata.json
REQUIRED = {
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "optional_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = prepare("phantom-ct", root / "prepared", task="pretrain", shape=(32, 32, 32), subjects=2)
    torch.manual_seed(3)
    return save_backbone(
        root / "backbone.pt",
        UNet3D(1, TINY),
        method="gvsl",
        iterations=40,
        pretrain={"seed": 1, "iterations": 40},
        commit="abc1234",
        dataset=str(data),
    )


@pytest.fixture(scope="module")
def bundle(backbone_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "gvsl"
    assert main(["export", "--bundle", str(out), "--backbone", str(backbone_file)]) == 0
    return out


def test_the_bundle_has_monai_layout_and_required_metadata(bundle):
    for path in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (bundle / path).is_file(), path
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert REQUIRED <= set(meta)
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["modality"] == "CT"
    assert image["intensity_window"]["offset"] == 1024.0 and image["spacing_mm"] == [5.0, 5.0, 5.0]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == TINY[-1]
    provenance = meta["gvsl_provenance"]
    assert {k: provenance[k] for k in ("method", "iterations", "seed", "commit")} == {
        "method": "gvsl",
        "iterations": 40,
        "seed": 1,
        "commit": "abc1234",
    }
    assert "ConfigParser" in (bundle / "docs" / "README.md").read_text()


def test_monai_verifies_the_network_against_its_declared_input_and_output(bundle):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--device",
            "cpu",
            "--n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified with no error" in done.stdout + done.stderr


def test_the_bundle_network_gives_the_backbones_features(bundle, backbone_file):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(1, 1, 24, 32, 40)
    with torch.no_grad():
        assert torch.equal(network.eval()(x), load_backbone(backbone_file).eval()(x)[1])


def test_export_errors_are_one_line(backbone_file, tmp_path, capsys):
    assert main(["export", "--bundle", str(tmp_path / "b"), "--backbone", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"gvsl export: error: --backbone: no file {tmp_path / 'missing.pt'}"
    torch.manual_seed(0)
    scratch = save_backbone(tmp_path / "scratch.pt", UNet3D(1, TINY), method="scratch", iterations=0, seed=0)
    assert main(["export", "--bundle", str(tmp_path / "b"), "--backbone", str(scratch)]) == 2
    assert "records no training data" in capsys.readouterr().err
