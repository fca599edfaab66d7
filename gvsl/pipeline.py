"""The DVC pipeline's stages as functions: a ``params.yaml`` mapping in, typed configs, files under ``build/``.

The notebooks in ``notebooks/`` receive ``params.yaml`` from papermill (``-f params.yaml``) and call
these functions, so a stage run from a notebook, from Python or from a test does the same thing.
Folder layout (``dvc.yaml`` names the same paths):

* ``build/prepared/<TASK>``: prepared datasets (pretrain, SHC, SAC, CCC, SBM);
* ``build/pretrain/<method>/seed<S>``: one folder per pre-training seed, each with ``backbone.pt``
  (+ ``checkpoint.pt``, ``dvclive/`` and ``pretext.json`` for pre-trained variants); ``scratch``
  holds a freshly initialised backbone per seed, so every (method, seed) is one file;
* ``build/transfer/<TASK>-<protocol>-<method>``: one folder per (pre-training seed, transfer seed),
  ``p<S>-t<T>`` (``metrics.json``, ``model.pt``, ``dvclive/``), and ``summary.json`` over all of them.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError

__all__ = ["BUILD", "METHODS", "PROTOCOLS", "TASKS", "prepared_dir", "pretrain_configs", "pretrain_dir",
           "pretrain_seeds", "transfer_dir", "prepare_stage", "pretrain_stage", "transfer_stage"]

BUILD = Path("build")
TASKS = ("SHC", "SAC", "CCC", "SBM")
PROTOCOLS = ("linear", "finetune")
#: backbone initialisations compared in Table 1: no pre-training, then the four pre-training variants
METHODS = ("scratch", "no_zmatch", "no_fundament", "no_affine", "gvsl")

#: ``params.pretrain`` keys the stage reads itself (the rest build :class:`gvsl.pretrain.PretrainConfig`)
_PRETRAIN_STAGE_KEYS = {"seeds", "processes", "heldout"}
_PREPARE_KEYS = {"source", "root", "shape", "spacing", "subjects", "roi_mm", "window_offset", "modality"}


def prepared_dir(task: str, build: Path = BUILD) -> Path:
    return Path(build) / "prepared" / task


def pretrain_dir(method: str, build: Path = BUILD, seed: int | None = None) -> Path:
    """``build/pretrain/<method>``, or the folder of one pre-training seed."""
    folder = Path(build) / "pretrain" / method
    return folder if seed is None else folder / f"seed{seed}"


def pretrain_seeds(params: Mapping[str, Any]) -> list[int]:
    """``params.pretrain.seeds``: every pre-trained method (and scratch) runs each."""
    seeds = _group(params, "pretrain", "seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds repeats a seed: {seeds}")
    return seeds


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


def pretrain_configs(method: str, params: Mapping[str, Any]) -> list[Any]:
    """One :class:`gvsl.pretrain.PretrainConfig` per ``pretrain.seeds`` for a GVSL variant."""
    from gvsl.pretrain import PretrainConfig

    settings = {k: v for k, v in dict(_group(params, "pretrain")).items() if k not in _PRETRAIN_STAGE_KEYS}
    if "seed" in settings:
        raise GVSLInputError("params.yaml: pretrain.seed is replaced by pretrain.seeds (a list)")
    channels = tuple(_group(params, "model", "channels"))
    return [PretrainConfig.from_dict({**settings, "variant": method, "channels": channels, "seed": seed})
            for seed in pretrain_seeds(params)]


def pretrain_stage(method: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> list[Path]:
    """Pre-train ``method`` (a GVSL variant) once per ``pretrain.seeds``; ``scratch`` only initialises.

    Variants with a Z-matching head register the held-out pairs of ``pretrain.heldout`` (a prepared
    task's split the pre-training never sees) every ``pretrain.eval_every`` iterations. Seeds run in
    ``pretrain.processes`` processes side by side.

    Returns the ``backbone.pt`` paths, one per seed.
    """
    from gvsl.checkpoint import save_backbone
    from gvsl.nets import UNet3D
    from gvsl.runtime import git_commit

    if method == "scratch":
        channels = tuple(_group(params, "model", "channels"))
        backbones = []
        for seed in pretrain_seeds(params):
            # The pre-training seed: scratch starts exactly where every variant of that seed starts.
            torch.manual_seed(seed)
            backbones.append(save_backbone(pretrain_dir(method, build, seed) / "backbone.pt", UNet3D(1, channels),
                                           variant="scratch", iterations=0, seed=seed, commit=git_commit()))
        return backbones
    configs = pretrain_configs(method, params)
    processes = _group(params, "pretrain", "processes")
    if not isinstance(processes, int) or processes < 1:
        raise GVSLInputError(f"params.yaml: pretrain.processes must be an integer >= 1, got {processes!r}")
    heldout = _load_heldout(_group(params, "pretrain", "heldout"), configs[0].crop, build)
    jobs = [(config, build, heldout, progress) for config in configs]
    processes = min(processes, len(jobs))
    if processes == 1:
        return [_pretrain_seed(*job) for job in jobs]
    # One process per seed, the CPU threads shared out: narrow 3-D convolutions scale poorly past one
    # thread, so seeds side by side finish sooner than seeds one after another.
    threads = max(1, torch.get_num_threads() // processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        return list(pool.map(_pretrain_seed, *zip(*jobs)))


def _pretrain_seed(config: Any, build: Path, heldout: Any, progress: bool) -> Path:
    from gvsl.pretrain import pretrain_prepared

    out = pretrain_dir(config.variant, build, config.seed)
    print(f"pretrain {config.variant} seed {config.seed}: {config.iterations} iterations", flush=True)
    result = pretrain_prepared(prepared_dir("pretrain", build), out, config, progress=progress, heldout=heldout)
    print(f"pretrain {config.variant} seed {config.seed}: done in {result.seconds:.0f} s "
          f"({result.steps_per_second:.2f} steps/s)", flush=True)
    return result.backbone


def _load_heldout(settings: Any, crop: tuple[int, ...], build: Path):
    """``params.pretrain.heldout`` = ``{task, split, pairs}`` → held-out pairs of that prepared task (required:
    ``dvc.yaml`` makes the pre-training stages depend on that task's prepared data)."""
    from gvsl.pretrain import load_heldout

    if not isinstance(settings, Mapping) or set(settings) != {"task", "split", "pairs"}:
        raise GVSLInputError(f"params.yaml: pretrain.heldout must be a mapping with keys task, split, pairs; "
                             f"got {settings!r}")
    if settings["split"] == "test":
        raise GVSLInputError("params.yaml: pretrain.heldout.split must not be 'test' (the test split is for Table 1)")
    return load_heldout(prepared_dir(str(settings["task"]), build), str(settings["split"]), crop,
                        int(settings["pairs"]))


def transfer_stage(task: str, protocol: str, method: str, params: Mapping[str, Any], build: Path = BUILD,
                   progress: bool = False) -> dict[str, Any]:
    """Run one Table 1 setting for every (pre-training seed, transfer seed); write ``summary.json``.

    The summary's ``test`` and ``val_curves`` list one entry per run, in the order of ``runs``
    (``[pre-training seed, transfer seed]`` pairs); ``mean`` and ``sd`` are over all runs.

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
    out = transfer_dir(task, protocol, method, build)
    began = time.perf_counter()
    runs, pairs = [], []
    for pretrain_seed in pretrain_seeds(params):
        backbone = pretrain_dir(method, build, pretrain_seed) / "backbone.pt"
        for seed in seeds:
            config = TransferConfig.from_dict({**settings, "task": info.task_type, "protocol": protocol,
                                               "num_classes": num_classes, "crop": tuple(crop), "seed": seed})
            print(f"{task}-{protocol}-{method}: pre-training seed {pretrain_seed}, transfer seed {seed}", flush=True)
            runs.append(transfer_prepared(data, out / f"p{pretrain_seed}-t{seed}", str(backbone), config,
                                          progress=progress))
            pairs.append((pretrain_seed, seed))
    tests = [r.test[r.metric_name] for r in runs]
    finite = [t for t in tests if not math.isnan(t)]
    per_class = {name.split("/", 1)[1]: [r.test[name] for r in runs] for name in runs[0].test if "/" in name}
    summary = {
        "task": task, "protocol": protocol, "method": method, "metric": runs[0].metric_name,
        "seeds": seeds, "pretrain_seeds": pretrain_seeds(params), "runs": [list(p) for p in pairs],
        "test": tests, "mean": statistics.fmean(finite) if finite else math.nan,
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan, "n_runs": len(finite),
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
