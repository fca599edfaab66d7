"""The pre-training stage: every seed of one method, with its held-out pairs."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS
from gvsl.pipeline.layout import BUILD, process_count, prepared_dir, pretrain_dir, pretrain_seeds, setting
from gvsl.pipeline.workers import in_processes
from gvsl.runtime import progress_line, resolve_device

#: ``params.pretrain`` keys the stage reads itself (the rest build :class:`gvsl.pretrain.PretrainConfig`)
_PRETRAIN_STAGE_KEYS = {"seeds", "processes", "heldout", "options"}


def pretrain_configs(method: str, params: Mapping[str, Any]) -> list[Any]:
    """One :class:`gvsl.pretrain.PretrainConfig` per ``pretrain.seeds`` for a pre-training method, with its
    settings from ``pretrain.options.<method>`` (absent: the method's defaults)."""
    from gvsl.pretrain import PretrainConfig

    settings = {k: v for k, v in dict(setting(params, "pretrain")).items() if k not in _PRETRAIN_STAGE_KEYS}
    if "seed" in settings:
        raise GVSLInputError("params.yaml: pretrain.seed is replaced by pretrain.seeds (a list)")
    options = dict(setting(params, "pretrain")).get("options") or {}
    if not isinstance(options, Mapping):
        raise GVSLInputError(f"params.yaml: pretrain.options must map methods to their settings, got {options!r}")
    unknown = sorted(set(options) - set(PRETRAIN_METHODS))
    if unknown:
        raise GVSLInputError(f"params.yaml: pretrain.options: unknown methods {unknown}; valid: {list(PRETRAIN_METHODS)}")
    channels = tuple(setting(params, "model", "channels"))
    try:
        return [PretrainConfig.from_dict({**settings, "method": method, "channels": channels, "seed": seed,
                                          "options": dict(options.get(method) or {})})
                for seed in pretrain_seeds(params)]
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: pretrain ({method}): {err}") from None


def pretrain_stage(method: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> list[Path]:
    """Pre-train ``method`` once per ``pretrain.seeds``; ``scratch`` only initialises.

    Every ``pretrain.eval_every`` iterations each method's loss is measured on the held-out pairs of
    ``pretrain.heldout`` (a prepared task's split the pre-training never sees), which methods with a
    Z-matching head also register. Seeds run in ``pretrain.processes`` processes side by side.

    Returns the ``backbone.pt`` paths, one per seed.
    """
    from gvsl.checkpoint import save_backbone
    from gvsl.nets import UNet3D
    from gvsl.nets.unet import check_channels
    from gvsl.runtime import environment, git_commit

    # DVC keeps this stage's output folder between runs (persist), so that an interrupted run resumes
    # from its checkpoint; the folders of seeds no longer asked for must go
    wanted = {pretrain_dir(method, build, seed).name for seed in pretrain_seeds(params)}
    for stale in sorted(pretrain_dir(method, build).glob("seed*")):
        if stale.name not in wanted:
            shutil.rmtree(stale)
    if method == "scratch":
        channels = tuple(setting(params, "model", "channels"))
        check_channels(channels, "params.yaml: model.channels")
        backbones = []
        for seed in pretrain_seeds(params):
            # The pre-training seed: scratch starts exactly where every method of that seed starts.
            torch.manual_seed(seed)
            backbones.append(save_backbone(pretrain_dir(method, build, seed) / "backbone.pt", UNet3D(1, channels),
                                           method="scratch", iterations=0, seed=seed, commit=git_commit(),
                                           environment=environment()))
        return backbones
    configs = pretrain_configs(method, params)
    processes = process_count(params, "pretrain")
    heldout = _load_heldout(setting(params, "pretrain", "heldout"), configs[0].crop, build)
    jobs = [(config, build, heldout, progress) for config in configs]
    on_cpu = resolve_device(configs[0].device).type == "cpu"
    return in_processes(_pretrain_seed, jobs, processes, single_threaded=on_cpu)


def _pretrain_seed(job: tuple[Any, Path, Any, bool]) -> Path:
    config, build, heldout, progress = job
    from gvsl.pretrain import RESUME_IF_UNCHANGED, pretrain_prepared

    out = pretrain_dir(config.method, build, config.seed)
    progress_line(f"pretrain {config.method} seed {config.seed}: {config.iterations} iterations")
    # an interrupted run of these very settings, data and code continues; anything else starts afresh
    result = pretrain_prepared(prepared_dir("pretrain", build), out, config, resume=RESUME_IF_UNCHANGED,
                               progress=progress, heldout=heldout)
    progress_line(f"pretrain {config.method} seed {config.seed}: done in {result.seconds:.0f} s "
                  f"({result.steps_per_second:.2f} steps/s)")
    return result.backbone


def _load_heldout(settings: Any, crop: tuple[int, ...], build: Path):
    """``params.pretrain.heldout`` = ``{task, split, pairs}`` → held-out pairs of that prepared task (required:
    ``dvc.yaml`` makes the pre-training stages depend on that task's prepared data)."""
    from gvsl.pretrain import load_heldout

    if not isinstance(settings, Mapping) or set(settings) != {"task", "split", "pairs"}:
        raise GVSLInputError(f"params.yaml: pretrain.heldout must be a mapping with keys task, split, pairs; "
                             f"got {settings!r}")
    try:
        return load_heldout(prepared_dir(str(settings["task"]), build), str(settings["split"]), crop,
                            int(settings["pairs"]))
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: pretrain.heldout: {err}") from None

