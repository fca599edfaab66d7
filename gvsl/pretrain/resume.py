"""Continuing an interrupted run: whether ``out`` holds this very run, restoring the training state its
checkpoint holds (written by :func:`gvsl.pretrain.engine.pretrain` every ``checkpoint_every`` iterations),
and trimming the DVCLive log to where the checkpoint stands."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gvsl.checkpoint import PRETRAIN_STATE_FORMAT as CHECKPOINT_FORMAT
from gvsl.checkpoint import load_file
from gvsl.errors import GVSLInputError
from gvsl.pretrain.config import PretrainConfig
from gvsl.pretrain.heldout import HELDOUT_LOG, HELDOUT_LOSS_LOG, MISALIGNMENT_LOG
from gvsl.provenance import changed_inputs
from gvsl.runtime import DistributedContext, progress_line

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "RESUME_IF_UNCHANGED", "restore", "should_resume", "truncate_log"]

CHECKPOINT_NAME = "checkpoint.pt"
#: ``pretrain(resume=…)``: continue only from a checkpoint of this very run
RESUME_IF_UNCHANGED = "if-unchanged"
#: settings a resumed run must share with its checkpoint for the learning rate to continue as it was
_SCHEDULE_KEYS = ("lr", "lr_schedule", "warmup")


def should_resume(
    resume: bool | str, out: Path, config: PretrainConfig, inputs: Mapping[str, Any], ctx: DistributedContext, name: str
) -> bool:
    """Whether the run continues from ``out``'s checkpoint (``resume`` as :func:`~gvsl.pretrain.pretrain` takes it)."""
    if resume == RESUME_IF_UNCHANGED:
        resume = _keep_matching_run(out, config, inputs, ctx, name)
    elif not isinstance(resume, bool):
        raise GVSLInputError(f"resume must be True, False or {RESUME_IF_UNCHANGED!r}, got {resume!r}")
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise GVSLInputError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")
    return resume


def _keep_matching_run(
    out: Path, config: PretrainConfig, inputs: Mapping[str, Any], ctx: DistributedContext, name: str
) -> bool:
    """Whether ``out`` holds a checkpoint of this run (same settings, data, held-out pairs and code).

    When it does not, everything in ``out`` is removed: an output folder kept across runs (DVC's
    ``persist``) must not mix a stale run's files into the new one.
    """
    checkpoint_path = out / CHECKPOINT_NAME
    changed: list[str] = []
    if checkpoint_path.is_file():
        try:
            state = load_file(checkpoint_path)
        except GVSLInputError:
            changed = ["a checkpoint that cannot be read"]
        else:
            changed = changed_inputs(state.get("config") or {}, config.to_dict())
            changed += changed_inputs(state.get("inputs") or {}, inputs)
            if state.get("format") != CHECKPOINT_FORMAT:
                changed.append("format")
    matches = checkpoint_path.is_file() and not changed
    if ctx.enabled:
        torch.distributed.barrier()  # every rank has read the checkpoint before rank 0 may remove it
    if not matches and ctx.is_main and out.exists():
        if changed:
            progress_line(f"{name}: {checkpoint_path} was written with other {', '.join(changed)}; starting afresh")
        shutil.rmtree(out)
    if ctx.enabled:
        torch.distributed.barrier()
    return matches


def restore(
    checkpoint_path: Path,
    model: torch.nn.Module,
    generator: torch.Generator,
    config: PretrainConfig,
    ctx: DistributedContext,
    name: str,
) -> tuple[int, dict[str, Any]]:
    """Load the checkpoint's weights and random-number states into ``model``, ``generator`` and torch.

    Returns the iterations it had done and the whole state (the optimiser's is restored by the engine).
    """
    state = load_file(checkpoint_path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise GVSLInputError(f"{checkpoint_path}: not a pre-training checkpoint (format {state.get('format')!r})")
    built = model.config.to_dict()
    if state["model_config"] != built:
        changed = sorted(k for k in {*built, *state["model_config"]} if state["model_config"].get(k) != built.get(k))
        raise GVSLInputError(
            f"{checkpoint_path}: was written with other {', '.join(changed)} "
            f"({ {k: state['model_config'].get(k) for k in changed} }) than this run's "
            f"({ {k: built.get(k) for k in changed} }); start afresh or keep them"
        )
    _check_schedule(checkpoint_path, state.get("config", {}), config)
    model.load_state_dict(state["model"])
    start = int(state["iteration"])
    if len(state["generators"]) != ctx.world_size:
        raise GVSLInputError(
            f"{checkpoint_path}: written by {len(state['generators'])} process(es), resumed with {ctx.world_size}"
        )
    generator.set_state(state["generators"][ctx.rank])
    torch.set_rng_state(state["torch_rng"])
    if ctx.is_main and start < config.iterations:
        progress_line(f"{name}: resumed from iteration {start}")
    return start, state


def _check_schedule(path: Path, saved: Mapping[str, Any], config: PretrainConfig) -> None:
    now = config.to_dict()
    changed = [k for k in _SCHEDULE_KEYS if k in saved and saved[k] != now[k]]
    if config.lr_schedule != "constant" and saved.get("iterations", config.iterations) != config.iterations:
        changed.append("iterations")  # a decaying schedule is defined by the run's length
    if changed:
        raise GVSLInputError(
            f"{path}: resuming with other {', '.join(changed)} than the checkpoint was trained with "
            f"({ {k: saved.get(k) for k in changed} }); start afresh or keep them"
        )


def truncate_log(live_dir: Path, first_step: int) -> None:
    """Drop rows a resumed run will log again: training rows from iteration ``first_step`` on, held-out
    rows after ``first_step`` iterations (a held-out row's step counts the iterations done before it).

    DVCLive rewrites its summaries (``metrics.json``, ``params.yaml``) at every step, so a run killed while
    writing one leaves it empty or cut, and DVCLive's resume then fails to parse it. Such a summary is
    removed: the run logs every value again and sets each step itself."""
    import json

    import yaml

    for summary, parse in (("metrics.json", json.loads), ("params.yaml", yaml.safe_load)):
        path = live_dir / summary
        try:
            if path.is_file() and not isinstance(parse(path.read_text(encoding="utf-8")), dict):
                raise ValueError("not a mapping")
        except (ValueError, yaml.YAMLError, UnicodeDecodeError):
            path.unlink()
    metrics = live_dir / "plots" / "metrics"
    for tsv in metrics.rglob("*.tsv"):
        table = pd.read_csv(tsv, sep="\t")
        heldout = tsv.parent.name in (HELDOUT_LOG, HELDOUT_LOSS_LOG, MISALIGNMENT_LOG)
        keep = table["step"] <= first_step if heldout else table["step"] < first_step
        table[keep].to_csv(tsv, sep="\t", index=False)
