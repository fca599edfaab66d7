"""``gvsl export``: a pre-trained backbone as a MONAI Bundle, the format MONAI's model zoo shares models in.

    gvsl export --bundle bundles/gvsl --backbone build/pretrain/gvsl/seed0/backbone.pt

writes

* ``configs/metadata.json``: the keys MONAI's bundle schema requires (versions, task, description,
  authors, copyright, ``network_data_format``), what the input must be (channels, intensity window,
  voxel spacing) and the provenance of the weights (method, iterations, seed, data, commit);
* ``configs/inference.json``: ``network_def``, the backbone as a :class:`gvsl.nets.LocalFeatureUNet`
  (image → dense local features f^l), for ``monai.bundle.ConfigParser``;
* ``models/model.pt``: the backbone's state dict;
* ``docs/README.md`` and ``LICENSE``.

``python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json
--config_file configs/inference.json`` checks the network against its declared input and output;
MONAI's ``verify_metadata`` also validates the metadata against the schema, which it downloads.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gvsl import __version__
from gvsl.errors import GVSLInputError

__all__ = ["add_arguments", "export_bundle", "run"]

#: the schema of MONAI's bundle metadata (what ``verify_metadata`` checks against)
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
BUNDLE_VERSION = "0.1.0"
_ROOT = Path(__file__).resolve().parent.parent
_PAPER = (
    "He, Yang, Chen, Ge, Zhu, Coatrieux, Shu, Li: Geometric Visual Similarity Learning in 3D Medical "
    "Image Self-supervised Pre-training, CVPR 2023"
)


def _dataset_info(backbone_file: Path, metadata: dict[str, Any], data: str | Path | None):
    """The prepared dataset the backbone was trained on (``data``, else the one its file records)."""
    from gvsl.data import load_prepared

    folder = data if data is not None else metadata.get("dataset")
    if folder is None:
        raise GVSLInputError(
            f"{backbone_file}: records no training data (a scratch backbone?); pass --data, the "
            "prepared dataset whose intensity window and spacing the bundle should declare"
        )
    if not Path(folder).is_dir():
        raise GVSLInputError(
            f"{backbone_file} was trained on {folder}, which is not here; pass --data, a prepared "
            "dataset with the same window and spacing"
        )
    return load_prepared(folder).info


def _license_text() -> str:
    """The kit's licence: the checkout's LICENSE, or the one installed with the package."""
    from importlib import metadata

    checkout = _ROOT / "LICENSE"
    if checkout.is_file():
        return checkout.read_text()
    for file in metadata.distribution("gvsl-kit").files or []:
        if file.name == "LICENSE":
            return file.read_text()
    raise GVSLInputError("the kit's LICENSE file is missing from this installation")


def _metadata(backbone, metadata: dict[str, Any], info) -> dict[str, Any]:
    import monai

    method = metadata.get("method", "unknown")
    seed = metadata.get("seed", (metadata.get("pretrain") or {}).get("seed"))
    window = dict(info.window)
    modality = "CT" if window.get("kind") == "ct" else "MR"
    features = backbone.local_channels
    spatial = ["16*n", "16*n", "16*n"]  # any size works (the U-Net pads to a multiple of 16); these need no padding
    return {
        "schema": METADATA_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by gvsl-kit {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"gvsl-kit": __version__},
        "required_packages_version": {"gvsl-kit": __version__},
        "name": f"GVSL-pretrained 3D U-Net ({method})",
        "task": f"Self-supervised pre-trained 3D {modality} feature extractor ({method})",
        "description": (
            f"The 3D U-Net backbone of GVSL pre-trained with the {method!r} method of gvsl-kit. "
            "Input: one image channel; output: dense local features f^l, one vector per voxel, for "
            "transfer to segmentation or classification heads."
        ),
        "authors": "gvsl-kit contributors (the method: " + _PAPER + ")",
        "copyright": "Copyright (c) gvsl-kit contributors; released under the Apache License 2.0",
        "data_source": f"prepared dataset {metadata.get('dataset', 'unrecorded')} (source {info.source!r})",
        "data_type": "numpy volumes of a gvsl-kit prepared dataset",
        "intended_use": "research: initialisation and feature extraction for 3D medical image analysis",
        "references": [_PAPER],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": modality,
                    "num_channels": backbone.in_channels,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                    "intensity_window": window,
                    "spacing_mm": list(info.spacing),
                }
            },
            "outputs": {
                "pred": {
                    "type": "feature",
                    "format": "embedding",
                    "num_channels": features,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): f"feature {i}" for i in range(features)},
                }
            },
        },
        "gvsl_provenance": {
            "method": method,
            "iterations": metadata.get("iterations"),
            "seed": seed,
            "pretrain": metadata.get("pretrain"),
            "dataset": metadata.get("dataset"),
            "dataset_source": info.source,
            "commit": metadata.get("commit"),
            "channels": list(backbone.channels),
            "python_version": platform.python_version(),
        },
    }


def _inference_config(backbone) -> dict[str, Any]:
    return {
        "imports": ["$import gvsl.nets"],
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "gvsl.nets.LocalFeatureUNet",
            "in_channels": backbone.in_channels,
            "channels": list(backbone.channels),
        },
        "network": "$@network_def.to(@device)",
    }


def _readme(meta: dict[str, Any]) -> str:
    provenance = meta["gvsl_provenance"]
    image = meta["network_data_format"]["inputs"]["image"]
    return "\n".join(
        [
            f"# {meta['name']}",
            "",
            meta["description"],
            "",
            "## Input",
            "",
            f"- {image['num_channels']} channel, {image['modality']}, float32 in [0, 1]: intensity window "
            f"`{json.dumps(image['intensity_window'])}`",
            f"- voxel spacing {image['spacing_mm']} mm; any size (padded internally to a multiple of 16)",
            "",
            "## Output",
            "",
            f"- {meta['network_data_format']['outputs']['pred']['num_channels']} feature channels per voxel, "
            "the same spatial size as the input",
            "",
            "## Use",
            "",
            "```python",
            "import torch",
            "from monai.bundle import ConfigParser",
            "",
            "parser = ConfigParser()",
            "parser.read_config('configs/inference.json')",
            "network = parser.get_parsed_content('network_def')",
            "network.load_state_dict(torch.load('models/model.pt', map_location='cpu', weights_only=True))",
            "features = network.eval()(torch.rand(1, 1, 32, 32, 32))  # (1, C, 32, 32, 32)",
            "```",
            "",
            "## Provenance",
            "",
            f"- method `{provenance['method']}`, {provenance['iterations']} iterations, seed {provenance['seed']}",
            f"- data: {provenance['dataset']} (source `{provenance['dataset_source']}`)",
            f"- gvsl-kit commit {provenance['commit']}",
            "",
            f"Method: {_PAPER}.",
            "",
        ]
    )


def export_bundle(out: str | Path, backbone_file: str | Path, data: str | Path | None = None) -> Path:
    """Write the MONAI Bundle of ``backbone_file`` (a ``backbone.pt``) into the folder ``out``; return ``out``."""
    from gvsl.checkpoint import BACKBONE_FORMAT, load_backbone, load_file

    backbone_file = Path(backbone_file)
    if not backbone_file.is_file():
        raise GVSLInputError(f"--backbone: no file {backbone_file}")
    state = load_file(backbone_file)
    if state.get("format") != BACKBONE_FORMAT:
        raise GVSLInputError(
            f"{backbone_file}: expecting a {BACKBONE_FORMAT!r} file (a pre-training run's "
            f"backbone.pt), got format {state.get('format')!r}"
        )
    backbone = load_backbone(state)
    metadata = dict(state.get("metadata") or {})
    info = _dataset_info(backbone_file, metadata, data)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GVSLInputError(f"--bundle: {out} exists and is not empty; choose a new folder")
    meta = _metadata(backbone, metadata, info)
    for folder in ("configs", "models", "docs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(_inference_config(backbone), indent=2) + "\n")
    torch.save(backbone.state_dict(), out / "models" / "model.pt")
    (out / "docs" / "README.md").write_text(_readme(meta))
    (out / "LICENSE").write_text(_license_text())
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="output folder of the bundle (new or empty)")
    parser.add_argument("--backbone", required=True, help="a pre-training run's backbone.pt")
    parser.add_argument(
        "--data",
        help="prepared dataset that declares the input's window and spacing "
        "(default: the one the backbone was trained on)",
    )


def run(args: argparse.Namespace) -> int:
    out = export_bundle(args.bundle, args.backbone, args.data)
    print(f"bundle written to {out}")
    return 0
