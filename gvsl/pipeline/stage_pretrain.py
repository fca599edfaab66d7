"""The pre-training stage: every (method, seed) of the pipeline, side by side, with their held-out pairs."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS, SCRATCH
from gvsl.pipeline.config import HeldoutSettings, Settings, as_settings
from gvsl.pipeline.layout import BUILD, prepared_dir, pretrain_dir
from gvsl.pipeline.workers import run_jobs
from gvsl.runtime import progress_line


def pretrain_configs(method: str, settings: Settings | Mapping[str, Any]) -> list[Any]:
    """One :class:`gvsl.pretrain.PretrainConfig` per ``pretrain.seeds`` for a pre-training method, with its
    settings from ``pretrain.options.<method>`` (absent: the method's defaults)."""
    return as_settings(settings).pretrain_configs(method)


def pretrain_stage(
    settings: Settings | Mapping[str, Any], build: Path = BUILD, progress: bool = False
) -> dict[str, list[Path]]:
    """Pre-train every method of ``pipeline.methods`` once per ``pretrain.seeds``; ``scratch`` only initialises.

    Every (method, seed) is one job; the jobs run side by side on ``pretrain.devices``
    (:func:`gvsl.pipeline.workers.run_jobs`), the longest first. A run whose folder holds a finished run
    with the same settings, data, held-out pairs and code is kept as it is, and an interrupted one
    resumes from its checkpoint (``resume="if-unchanged"``), so adding a method or a seed trains only
    that. Every ``pretrain.eval_every`` iterations each method's loss is measured on the held-out pairs
    of ``pretrain.heldout`` (a prepared task's split the pre-training never sees), which methods with a
    Z-matching head also register.

    Returns the ``backbone.pt`` paths of each method, one per seed.
    """
    settings = as_settings(settings)
    methods = list(settings.pipeline.methods)
    _remove_stale_runs(methods, settings.pretrain.seeds, build)
    backbones = {SCRATCH: _scratch(settings, build)} if SCRATCH in methods else {}
    configs = [config for method in settings.pipeline.pretrained for config in settings.pretrain_configs(method)]
    if configs:
        heldout = _load_heldout(settings.pretrain.heldout, configs[0].crop, build)
        configs.sort(key=_expected_cost, reverse=True)  # the longest first, so that the workers end evenly
        jobs = [(config, build, heldout, progress) for config in configs]
        paths = run_jobs(_pretrain_job, jobs, settings, "pretrain")
        done = {(config.method, config.seed): path for config, path in zip(configs, paths)}
        for method in settings.pipeline.pretrained:
            backbones[method] = [done[method, seed] for seed in settings.pretrain.seeds]
    return {method: backbones[method] for method in methods}


def _remove_stale_runs(methods: list[str], pretrain_seeds: Sequence[int], build: Path) -> None:
    """DVC keeps this stage's output folder between runs (persist), so that an interrupted run resumes
    from its checkpoint; the folders of methods and seeds no longer asked for must go."""
    root = Path(build) / "pretrain"
    seeds = {pretrain_dir("any", build, seed).name for seed in pretrain_seeds}
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        if folder.name not in methods:
            shutil.rmtree(folder)
            continue
        for stale in sorted(folder.glob("seed*")):
            if stale.name not in seeds:
                shutil.rmtree(stale)


def _scratch(settings: Settings, build: Path) -> list[Path]:
    """A freshly initialised backbone per pre-training seed: where every method of that seed starts."""
    from gvsl.checkpoint import save_backbone
    from gvsl.nets import UNet3D
    from gvsl.provenance import environment, git_commit

    channels = settings.model.channels
    backbones = []
    for seed in settings.pretrain.seeds:
        torch.manual_seed(seed)
        backbone, path = UNet3D(1, channels), pretrain_dir(SCRATCH, build, seed) / "backbone.pt"
        if not _same_weights(path, backbone):  # an unchanged file keeps its provenance, and its transfer stage
            save_backbone(
                path,
                backbone,
                method=SCRATCH,
                iterations=0,
                seed=seed,
                commit=git_commit(),
                environment=environment(),
            )
        backbones.append(path)
    return backbones


def _same_weights(path: Path, backbone: torch.nn.Module) -> bool:
    from gvsl.checkpoint import load_file

    try:
        saved = load_file(path)["state_dict"]
    except (GVSLInputError, KeyError, OSError):
        return False
    fresh = backbone.state_dict()
    return saved.keys() == fresh.keys() and all(torch.equal(saved[key], fresh[key]) for key in fresh)


def _expected_cost(config: Any) -> tuple[bool, bool, int]:
    """How long a run takes, roughly: methods with a Z-matching head (GVSL-like: two backbone passes, the
    heads, a 9³ NCC) before those that restore through the decoder, before encoder-only ones; then iterations."""
    method = PRETRAIN_METHODS[config.method]
    return method.registers, method.uses_decoder, config.iterations


def _pretrain_job(job: tuple[Any, Path, Any, bool], device: str) -> Path:
    config, build, heldout, progress = job
    from gvsl.pretrain import RESUME_IF_UNCHANGED, pretrain_prepared

    config = replace(config, device=device)
    out = pretrain_dir(config.method, build, config.seed)
    progress_line(f"pretrain {config.method} seed {config.seed}: {config.iterations} iterations on {device}")
    # an interrupted run of these very settings, data and code continues, a finished one is kept; anything
    # else starts afresh
    result = pretrain_prepared(
        prepared_dir("pretrain", build), out, config, resume=RESUME_IF_UNCHANGED, progress=progress, heldout=heldout
    )
    if result.seconds:
        progress_line(
            f"pretrain {config.method} seed {config.seed}: done in {result.seconds:.0f} s "
            f"({result.steps_per_second:.2f} steps/s)"
        )
    return result.backbone


def _load_heldout(heldout: HeldoutSettings | None, crop: tuple[int, ...], build: Path):
    """``pretrain.heldout`` → held-out pairs of that prepared task (required: ``dvc.yaml`` makes the
    pre-training stage depend on the prepared data); None without ``pretrain.heldout``."""
    from gvsl.pretrain import load_heldout

    if heldout is None:
        return None
    try:
        return load_heldout(prepared_dir(heldout.task, build), heldout.split, crop, heldout.pairs)
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: pretrain.heldout: {err}") from None
