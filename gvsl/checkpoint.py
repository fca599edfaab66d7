"""Checkpoints: our own (config + weights, rebuildable from the file alone) and the authors' released weights.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors and
plain containers only, never arbitrary pickled objects. Files are written atomically (temporary
file in the same folder, then ``os.replace``) so an interrupted save never leaves a truncated file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.nets.gvsl_network import GVSL, GVSLConfig
from gvsl.nets.unet import UNet3D

__all__ = [
    "atomic_save",
    "load_backbone",
    "load_file",
    "load_model",
    "load_official",
    "load_pretrained_gvsl",
    "official_to_kit_key",
    "save_backbone",
    "save_model",
]

MODEL_FORMAT = "gvsl-kit/model/1"
BACKBONE_FORMAT = "gvsl-kit/backbone/1"
#: ``gvsl.pretrain``'s full training state (model, optimizer, generators, iteration)
PRETRAIN_STATE_FORMAT = "gvsl-kit/pretrain-state/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _describe(source: str | os.PathLike | Mapping[str, Any]) -> str:
    return "checkpoint dict" if isinstance(source, Mapping) else str(source)


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise GVSLInputError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated, foreign or unsafe files
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise GVSLInputError(f"{path}: not a readable weights-only PyTorch checkpoint ({reason})") from err
    if not isinstance(obj, Mapping):
        raise GVSLInputError(f"{path}: expecting a dict at the top level, got {type(obj).__name__}")
    return dict(obj)


def save_model(path: str | os.PathLike, model: GVSL, **extra: Any) -> Path:
    """Save a :class:`GVSL` with its config; ``extra`` (optimizer state, iteration, RNG…) rides along."""
    return atomic_save(
        {"format": MODEL_FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(), **extra}, path
    )


def load_model(source: str | os.PathLike | Mapping[str, Any]) -> GVSL:
    """Rebuild a :class:`GVSL` from a file written by :func:`save_model` (or its loaded dict)."""
    ckpt = load_file(source) if not isinstance(source, Mapping) else dict(source)
    if ckpt.get("format") != MODEL_FORMAT:
        raise GVSLInputError(
            f"{_describe(source)}: expecting a {MODEL_FORMAT!r} checkpoint, got format {ckpt.get('format')!r}"
        )
    model = GVSL.from_config(GVSLConfig.from_dict(ckpt["config"]))
    _load_strict(model, ckpt["state_dict"], _describe(source))
    return model


def load_pretrained_gvsl(source: str | os.PathLike | Mapping[str, Any]) -> GVSL:
    """The whole :class:`GVSL` (backbone and heads) of a pre-training ``checkpoint.pt``."""
    ckpt = load_file(source) if not isinstance(source, Mapping) else dict(source)
    if ckpt.get("format") != PRETRAIN_STATE_FORMAT:
        raise GVSLInputError(
            f"{_describe(source)}: expecting a pre-training checkpoint ({PRETRAIN_STATE_FORMAT!r}), "
            f"got format {ckpt.get('format')!r}"
        )
    model = GVSL.from_config(GVSLConfig.from_dict(ckpt["model_config"]))
    _load_strict(model, ckpt["model"], _describe(source))
    return model


def save_backbone(path: str | os.PathLike, backbone: UNet3D, **metadata: Any) -> Path:
    """Save the pretrained backbone with its constructor arguments and provenance ``metadata``."""
    return atomic_save(
        {
            "format": BACKBONE_FORMAT,
            "in_channels": backbone.in_channels,
            "channels": list(backbone.channels),
            "state_dict": backbone.state_dict(),
            "metadata": metadata,
        },
        path,
    )


def load_backbone(source: str | os.PathLike | Mapping[str, Any]) -> UNet3D:
    """Rebuild a :class:`UNet3D` from :func:`save_backbone`'s file, our model checkpoint, or the authors' weights."""
    ckpt = load_file(source) if not isinstance(source, Mapping) else dict(source)
    if ckpt.get("format") == BACKBONE_FORMAT:
        backbone = UNet3D(ckpt["in_channels"], ckpt["channels"])
        _load_strict(backbone, ckpt["state_dict"], _describe(source))
        return backbone
    if ckpt.get("format") == MODEL_FORMAT:
        return load_model(ckpt).backbone
    return _load_official_backbone(ckpt)


# The authors' parameter names (their ``GVSL`` module) -> ours. Their ``DoubleConv`` wraps an
# ``nn.Sequential`` with the same layer indices as our ``ConvBlock``.
_OFFICIAL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^unet\.inc\.double_conv\.(.+)$"), r"backbone.stem.\1"),
    (re.compile(r"^unet\.down([1-4])\.maxpool_conv\.1\.double_conv\.(.+)$"), r"backbone.down.{\1-1}.\2"),
    (re.compile(r"^unet\.up([1-4])\.conv\.double_conv\.(.+)$"), r"backbone.up.{\1-1}.\2"),
    (re.compile(r"^f_conv\.double_conv\.(.+)$"), r"affine_head.block.\1"),
    (re.compile(r"^fc_rot\.(.+)$"), r"affine_head.rotation.\1"),
    (re.compile(r"^fc_scl\.(.+)$"), r"affine_head.scale.\1"),
    (re.compile(r"^fc_trans\.(.+)$"), r"affine_head.translation.\1"),
    (re.compile(r"^fc_shear\.(.+)$"), r"affine_head.shear.\1"),
    (re.compile(r"^sp_conv\.double_conv\.(.+)$"), r"deformable_head.block.\1"),
    (re.compile(r"^out_flow\.(.+)$"), r"deformable_head.flow.\1"),
    (re.compile(r"^res_conv\.(.+)$"), r"restoration_head.\1"),
]


def official_to_kit_key(key: str) -> str | None:
    """Our parameter name for one of the authors' ``GVSL`` state-dict keys, or ``None`` if unknown."""
    for pattern, template in _OFFICIAL_RULES:
        match = pattern.match(key)
        if match:
            out = match.expand(template)
            # "{k-1}" turns the authors' 1-based level number into our 0-based ModuleList index.
            return re.sub(r"\{(\d)-1\}", lambda m: str(int(m.group(1)) - 1), out)
    return None


def _unwrap_official(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model", "net"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    # DataParallel / DDP prefixes.
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _map_official(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int, list[int]]:
    """The authors' tensors under our names, with the input channels and nine widths read from their shapes."""
    name = _describe(source)
    official = _unwrap_official(load_file(source) if not isinstance(source, Mapping) else source)
    mapped = {official_to_kit_key(k): v for k, v in official.items()}
    unknown = sorted(k for k in official if official_to_kit_key(k) is None)
    if unknown:
        raise GVSLInputError(f"{name}: unrecognised keys for the authors' GVSL: {unknown[:5]}")
    try:
        stem = mapped["backbone.stem.0.weight"]
        channels = [stem.shape[0]]
        channels += [mapped[f"backbone.down.{i}.0.weight"].shape[0] for i in range(4)]
        channels += [mapped[f"backbone.up.{i}.0.weight"].shape[0] for i in range(4)]
    except KeyError as err:
        raise GVSLInputError(f"{name}: lacks backbone weight {err.args[0]!r} (ours) of the authors' U-Net") from err
    return mapped, int(stem.shape[1]), channels


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise GVSLInputError(f"{what} does not fit the inferred architecture: {err}") from err


def load_official(source: str | os.PathLike | Mapping[str, Any]) -> GVSL:
    """Our :class:`GVSL` carrying weights saved by the authors' code (a state dict of their ``GVSL``).

    Widths and present heads are read from the tensors' shapes, so narrower or partial checkpoints
    load too; heads absent from the file are switched off. Backbone features and the restoration
    equal the authors' on the same input. Their affine head's translation output is divided by the
    volume size in their code and read in half-extents here (see :class:`~gvsl.nets.gvsl_heads.AffineHead`),
    so predicted translations differ. A file with backbone weights only loads with :func:`load_backbone`.
    """
    mapped, in_channels, channels = _map_official(source)
    has = {
        head: any(k.startswith(head + ".") for k in mapped)
        for head in ("affine_head", "deformable_head", "restoration_head")
    }
    if not any(has.values()):
        raise GVSLInputError(
            f"{_describe(source)}: holds backbone weights only; load it with gvsl.checkpoint.load_backbone"
        )
    local_head = next(
        mapped[k].shape[0] for k in ("deformable_head.block.0.weight", "restoration_head.0.weight") if k in mapped
    )
    model = GVSL(
        in_channels=in_channels,
        channels=channels,
        affine=has["affine_head"],
        deformable=has["deformable_head"],
        restoration=has["restoration_head"],
        affine_channels=mapped["affine_head.block.0.weight"].shape[0] if has["affine_head"] else 256,
        local_head_channels=local_head,
    )
    _load_strict(model, mapped, "authors' checkpoint")
    return model


def _load_official_backbone(source: str | os.PathLike | Mapping[str, Any]) -> UNet3D:
    mapped, in_channels, channels = _map_official(source)
    backbone = UNet3D(in_channels, channels)
    state = {k.removeprefix("backbone."): v for k, v in mapped.items() if k.startswith("backbone.")}
    _load_strict(backbone, state, "authors' backbone")
    return backbone
