"""Where the pipeline's files live, and how its stages read ``params.yaml`` and the project folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError

BUILD = Path("build")


def prepared_dir(task: str, build: Path = BUILD) -> Path:
    return Path(build) / "prepared" / task


def pretrain_dir(method: str, build: Path = BUILD, seed: int | None = None) -> Path:
    """``build/pretrain/<method>``, or the folder of one pre-training seed."""
    folder = Path(build) / "pretrain" / method
    return folder if seed is None else folder / f"seed{seed}"


def pretrain_seeds(params: Mapping[str, Any]) -> list[int]:
    """``params.pretrain.seeds``: every pre-trained method (and scratch) runs each."""
    seeds = setting(params, "pretrain", "seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds repeats a seed: {seeds}")
    return seeds


def transfer_dir(task: str, protocol: str, method: str, build: Path = BUILD) -> Path:
    """``build/transfer/<method>/<TASK>-<protocol>``: one Table 1 cell (the method's stage writes all of its cells)."""
    return Path(build) / "transfer" / method / f"{task}-{protocol}"


def setting(params: Mapping[str, Any], *keys: str) -> Any:
    """``params[k1][k2]…`` with an error naming the missing ``params.yaml`` key."""
    value: Any = params
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise GVSLInputError(f"params.yaml: missing key {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def process_count(params: Mapping[str, Any], group: str) -> int:
    """``<group>.processes``: an integer >= 1, or ``auto`` for one process per available CPU core."""
    from gvsl.pipeline.workers import available_cores

    processes = setting(params, group, "processes")
    if processes == "auto":
        return available_cores()
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise GVSLInputError(f"params.yaml: {group}.processes must be an integer >= 1 or 'auto', got {processes!r}")
    return processes


def find_project(start: Path | None = None) -> Path:
    """The folder holding ``params.yaml`` and ``dvc.yaml``: the current one or a parent."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise GVSLInputError(f"no params.yaml and dvc.yaml in {here} or its parents; run from the project")


def notebook_params(**injected: Any) -> dict[str, Any]:
    """The stage's settings inside a notebook, and the working directory set to the project root.

    papermill injects ``params.yaml``'s groups into the notebook's parameters cell (:mod:`gvsl.stage`);
    run by hand, those parameters keep their ``None`` defaults and are read from ``params.yaml``
    here, so both ways see one source of settings.
    """
    import os

    import yaml

    root = find_project()
    os.chdir(root)
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    params.update({key: value for key, value in injected.items() if value is not None})
    return params
