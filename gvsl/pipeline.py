"""The DVC pipeline's stages as functions: a ``params.yaml`` mapping in, typed configs, files under ``build/``.

The notebooks in ``notebooks/`` receive ``params.yaml`` from papermill (``-f params.yaml``) and call
these functions, so a stage run from a notebook, from Python or from a test does the same thing.
Folder layout (``dvc.yaml`` names the same paths):

* ``build/prepared/<TASK>``: prepared datasets (pretrain, SHC, SAC, CCC, SBM);
* ``build/pretrain/<method>``: ``backbone.pt`` (+ ``checkpoint.pt`` and ``dvclive/`` for pre-trained
  variants); ``scratch`` holds a freshly initialised backbone, so every method is one file;
* ``build/transfer/<TASK>-<protocol>-<method>``: one folder per seed (``metrics.json``, ``model.pt``,
  ``dvclive/``) and ``summary.json`` over the seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError

__all__ = ["BUILD", "METHODS", "PROTOCOLS", "TASKS", "prepared_dir", "pretrain_dir", "transfer_dir",
           "prepare_stage", "pretrain_stage", "transfer_stage"]

BUILD = Path("build")
TASKS = ("SHC", "SAC", "CCC", "SBM")
PROTOCOLS = ("linear", "finetune")
#: backbone initialisations compared in Table 1: no pre-training, then the four pre-training variants
METHODS = ("scratch", "no_zmatch", "no_fundament", "no_affine", "gvsl")

_PREPARE_KEYS = {"source", "root", "shape", "spacing", "subjects", "roi_mm", "window_offset", "modality"}


def prepared_dir(task: str, build: Path = BUILD) -> Path:
    return Path(build) / "prepared" / task


def pretrain_dir(method: str, build: Path = BUILD) -> Path:
    return Path(build) / "pretrain" / method


def transfer_dir(task: str, protocol: str, method: str, build: Path = BUILD) -> Path:
    return Path(build) / "transfer" / f"{task}-{protocol}-{method}"


def _group(params: Mapping[str, Any], *keys: str) -> Any:
    """``params[k1][k2]…`` with an error naming the missing ``params.yaml`` key."""
    value: Any = params
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise GVSLInputError(f"params.yaml: missing key {'.'.join(keys[:depth + 1])}")
        value = value[key]
    return value


def prepare_stage(task: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> Path:
    """Prepare ``task`` as ``params.prepare.tasks.<task>`` says (a generated cohort or a real dataset)."""
    from gvsl.data import prepare

    settings = dict(_group(params, "prepare", "tasks", task))
    unknown = set(settings) - _PREPARE_KEYS
    if unknown:
        raise GVSLInputError(f"params.yaml: prepare.tasks.{task}: unknown settings {sorted(unknown)}; "
                             f"valid: {sorted(_PREPARE_KEYS)}")
    if "source" not in settings:
        raise GVSLInputError(f"params.yaml: prepare.tasks.{task}: missing 'source'")
    source = settings.pop("source")
    return prepare(source, prepared_dir(task, build), task=task, seed=int(_group(params, "prepare", "seed")),
                   overwrite=True, progress=progress, **settings)


def pretrain_stage(method: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> Path:
    """Pre-train ``method`` (a GVSL variant) on the prepared pre-training set; ``scratch`` only initialises.

    Returns the ``backbone.pt`` path.
    """
    from gvsl.checkpoint import save_backbone
    from gvsl.nets import UNet3D
    from gvsl.pretrain import PretrainConfig, pretrain_prepared
    from gvsl.runtime import git_commit

    settings = dict(_group(params, "pretrain"))
    channels = tuple(_group(params, "model", "channels"))
    out = pretrain_dir(method, build)
    if method == "scratch":
        # The same seed as pre-training: scratch starts exactly where every variant starts.
        torch.manual_seed(int(settings.get("seed", 0)))
        backbone = UNet3D(1, channels)
        return save_backbone(out / "backbone.pt", backbone, variant="scratch", iterations=0,
                             seed=int(settings.get("seed", 0)), commit=git_commit())
    config = PretrainConfig.from_dict({**settings, "variant": method, "channels": channels})
    return pretrain_prepared(prepared_dir("pretrain", build), out, config, progress=progress).backbone


def transfer_stage(task: str, protocol: str, method: str, params: Mapping[str, Any], build: Path = BUILD,
                   progress: bool = False) -> dict[str, Any]:
    """Run one Table 1 setting for every seed in ``params.transfer.<protocol>.seeds``; write ``summary.json``.

    ``params.transfer.crop.<task>`` may be ``null``: the training crop is then the prepared volume
    (every case of the generated cohorts has one shape), which lets a linear probe reuse its frozen
    features (see :class:`gvsl.transfer.TransferModel`).
    """
    from gvsl.data import load_prepared
    from gvsl.runtime import git_commit
    from gvsl.transfer import TransferConfig, transfer_prepared

    if task not in TASKS or protocol not in PROTOCOLS or method not in METHODS:
        raise GVSLInputError(f"unknown transfer setting {task}-{protocol}-{method}; tasks {TASKS}, "
                             f"protocols {PROTOCOLS}, methods {METHODS}")
    data = prepared_dir(task, build)
    dataset = load_prepared(data, task=task)
    info = dataset.info
    settings = dict(_group(params, "transfer", protocol))
    seeds = [int(s) for s in settings.pop("seeds")]
    if not seeds:
        raise GVSLInputError(f"params.yaml: transfer.{protocol}.seeds is empty")
    crop = _group(params, "transfer", "crop", task)
    if crop is None:
        crop = dataset.load_case(dataset.ids("train")[0]).image.shape[-3:]
    num_classes = len(info.classes) + 1 if info.task_type == "segmentation" else 1
    backbone = pretrain_dir(method, build) / "backbone.pt"
    out = transfer_dir(task, protocol, method, build)
    began = time.perf_counter()
    runs = []
    for seed in seeds:
        config = TransferConfig.from_dict({**settings, "task": info.task_type, "protocol": protocol,
                                           "num_classes": num_classes, "crop": tuple(crop), "seed": seed})
        result = transfer_prepared(data, out / f"seed{seed}", str(backbone), config, progress=progress)
        runs.append(result)
    tests = [r.test[r.metric_name] for r in runs]
    finite = [t for t in tests if not math.isnan(t)]
    per_class = {name.split("/", 1)[1]: [r.test[name] for r in runs] for name in runs[0].test if "/" in name}
    summary = {
        "task": task, "protocol": protocol, "method": method, "metric": runs[0].metric_name,
        "seeds": seeds, "test": tests, "mean": statistics.fmean(finite) if finite else math.nan,
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan, "n_seeds": len(finite),
        "per_class": per_class, "val_curves": [[[int(i), float(v)] for i, v in r.val_curve] for r in runs],
        "best_iterations": [r.best_iteration for r in runs], "dataset": str(data),
        "dataset_source": info.source, "profile": str(params.get("profile", "unnamed")), "commit": git_commit(),
        "seconds": time.perf_counter() - began,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def find_project(start: Path | None = None) -> Path:
    """The folder holding ``params.yaml`` and ``dvc.yaml``: the current one or a parent."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise GVSLInputError(f"no params.yaml and dvc.yaml in {here} or its parents; run from the project")


def notebook_params(**injected: Any) -> dict[str, Any]:
    """The stage's settings inside a notebook, and the working directory set to the project root.

    papermill injects ``params.yaml``'s groups into the notebook's parameters cell (``-f params.yaml``);
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
