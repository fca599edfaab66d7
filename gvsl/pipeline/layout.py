"""Where the pipeline's files live, and how a stage's notebook finds the project and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Settings

BUILD = Path("build")


def prepared_dir(task: str, build: Path = BUILD) -> Path:
    return Path(build) / "prepared" / task


def pretrain_dir(method: str, build: Path = BUILD, seed: int | None = None) -> Path:
    """``build/pretrain/<method>``, or the folder of one pre-training seed."""
    folder = Path(build) / "pretrain" / method
    return folder if seed is None else folder / f"seed{seed}"


def transfer_dir(task: str, protocol: str, method: str, build: Path = BUILD, fraction: float = 1.0) -> Path:
    """``build/transfer/<method>/<TASK>-<protocol>``: one Table 1 cell (the method's stage writes all of its cells);
    with a ``fraction`` of the labels below 1, its label-efficiency cell ``<TASK>-<protocol>-labels<fraction>``."""
    cell = f"{task}-{protocol}" if fraction == 1 else f"{task}-{protocol}-labels{fraction:g}"
    return Path(build) / "transfer" / method / cell


def find_project(start: Path | None = None) -> Path:
    """The folder holding ``params.yaml`` and ``dvc.yaml``: the current one or a parent."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise GVSLInputError(f"no params.yaml and dvc.yaml in {here} or its parents; run from the project")


def notebook_settings(injected: Mapping[str, Any] | None = None) -> Settings:
    """The stage's settings inside a notebook, and the working directory set to the project root.

    ``python -m gvsl.stage`` injects the resolved settings into the notebook's parameters cell
    (``settings``); run by hand, that parameter keeps its ``None`` and the settings are read from the
    project's ``params.yaml`` here, so both ways see one source of settings.
    """
    import os

    from gvsl.pipeline.config import PARAMS, load_settings
    from gvsl.settings import from_mapping

    root = find_project()
    os.chdir(root)
    return load_settings(root / PARAMS) if injected is None else from_mapping(Settings, injected, "settings")
