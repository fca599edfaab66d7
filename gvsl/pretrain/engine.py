"""The pre-training engine: one run of any method of :mod:`gvsl.methods`, from its set-up to ``backbone.pt``.

A run is set up (device and process group, data, resume, seeded model, optimiser), trained (a loop over
one step function, with logging, held-out evaluation and checkpoints) and finished (the backbone with
its provenance). Every ``checkpoint_every`` iterations the whole training state is written, so that
:mod:`gvsl.pretrain.resume` continues an interrupted run with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from gvsl.bank import VolumeBank
from gvsl.checkpoint import atomic_save, save_backbone
from gvsl.errors import GVSLInputError, NonFiniteLossError
from gvsl.losses import LossTerms
from gvsl.methods import PretrainMethod
from gvsl.pretext import HeldOutPairs
from gvsl.pretrain.config import PretrainConfig, lr_factor
from gvsl.pretrain.heldout import PRETEXT_NAME, HeldoutEvaluation
from gvsl.pretrain.resume import CHECKPOINT_FORMAT, CHECKPOINT_NAME, restore, should_resume, truncate_log
from gvsl.provenance import code_digest, environment, git_commit
from gvsl.runtime import (
    DistributedContext,
    autocast,
    channels_last,
    end_live,
    eta,
    progress_line,
    setup_distributed,
)

__all__ = ["BACKBONE_NAME", "PretrainResult", "pretrain", "pretrain_prepared"]

BACKBONE_NAME = "backbone.pt"


@dataclass
class PretrainResult:
    """Paths and numbers of a finished run."""

    out: Path
    backbone: Path
    checkpoint: Path
    iterations: int
    final_terms: dict[str, float]
    seconds: float
    steps_per_second: float


@dataclass
class _Run:
    """A run being trained: its settings, where it runs, its data, and what it trains."""

    config: PretrainConfig
    out: Path
    ctx: DistributedContext
    device: torch.device
    bank: VolumeBank
    #: what decides whether a checkpoint is this run's (data and held-out digests, code)
    inputs: dict[str, Any]
    name: str
    method: PretrainMethod
    model: torch.nn.Module
    #: ``model``, wrapped for DDP under torchrun
    train_model: torch.nn.Module
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start: int
    #: when training began (time.perf_counter), for the progress lines' ETA
    began: float = 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME


def pretrain(
    volumes: Sequence[np.ndarray | torch.Tensor] | VolumeBank,
    out: str | Path,
    config: PretrainConfig,
    resume: bool | str = False,
    ids: Sequence[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    heldout: HeldOutPairs | None = None,
) -> PretrainResult:
    """Pre-train ``config.method`` on ``volumes`` and write ``out/backbone.pt``.

    Args:
        volumes: normalised volumes, or a :class:`VolumeBank`.
        out: output folder: ``checkpoint.pt`` (full training state, every ``checkpoint_every``
            iterations), ``backbone.pt`` (the pretrained U-Net with its config and provenance),
            ``dvclive/`` (loss terms per iteration, ``heldout_loss/*`` and ``heldout/*`` per
            evaluation) and, for methods with a Z-matching head and ``heldout``, ``pretext.json``
            (the first and last registration of the held-out pairs, per pair).
        config: run settings.
        resume: ``True``: continue from ``out/checkpoint.pt``; the run ends with the same weights as
            an uninterrupted one (same device and seed). Without a checkpoint the run starts afresh.
            ``"if-unchanged"`` (what the pipeline's stages use): continue only from a checkpoint
            written with this run's settings, data, held-out pairs and ``gvsl`` code; any other
            content of ``out`` is removed and the run starts afresh. A run that had finished (its
            checkpoint at ``config.iterations``, its ``backbone.pt`` written) is kept as it is.
        ids: names of the volumes for error messages.
        provenance: recorded in ``backbone.pt`` (data source, profile…).
        progress: show a progress bar (main process only).
        heldout: pairs of subjects the run never trains on: every ``config.eval_every`` iterations the
            method's loss is measured on them (fixed augmentations) and a Z-matching head registers
            them (:mod:`gvsl.pretext`).

    Raises:
        GVSLInputError: bad settings or data, or ``out`` already holding a run while ``resume`` is off.
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint stays in place).
    """
    out = Path(out)
    run = _open_run(volumes, out, config, resume, ids, heldout)
    records_heldout = heldout is not None and run.method.registers
    if (
        run.start == config.iterations
        and (out / BACKBONE_NAME).is_file()
        and (not records_heldout or (out / PRETEXT_NAME).is_file())
    ):
        # a finished run of these very settings, data and code, its outputs complete: its files stay as they are
        if run.ctx.is_main:
            progress_line(f"{run.name}: kept, finished earlier with the same settings, data, held-out pairs and code")
        return PretrainResult(out, out / BACKBONE_NAME, run.checkpoint_path, config.iterations, {}, 0.0, float("nan"))
    live = _open_log(run) if run.ctx.is_main else None
    evaluation = (
        HeldoutEvaluation(
            live,
            run.method,
            run.model,
            heldout,
            config.batch_size,
            run.device,
            out / PRETEXT_NAME,
            resumed=bool(run.start),
            precision=config.precision,
        )
        if heldout is not None and run.ctx.is_main
        else None
    )
    bar = tqdm(
        total=config.iterations,
        initial=run.start,
        disable=not (progress and run.ctx.is_main),
        desc=run.name,
        dynamic_ncols=True,
    )
    began = run.began = time.perf_counter()
    final_terms = _train(run, live, evaluation, bar, progress)
    bar.close()
    seconds = time.perf_counter() - began
    _finish(run, live, provenance)
    steps = config.iterations - run.start
    return PretrainResult(
        out,
        out / BACKBONE_NAME,
        run.checkpoint_path,
        config.iterations,
        final_terms,
        seconds,
        steps / seconds if seconds > 0 else float("nan"),
    )


def _open_run(
    volumes: Sequence[np.ndarray | torch.Tensor] | VolumeBank,
    out: Path,
    config: PretrainConfig,
    resume: bool | str,
    ids: Sequence[str] | None,
    heldout: HeldOutPairs | None,
) -> _Run:
    """Set a run up: device and process group, data, whether it resumes, the seeded model, the optimiser."""
    ctx, device = setup_distributed(config.device)
    bank = volumes if isinstance(volumes, VolumeBank) else VolumeBank(volumes, ids)
    bank.check_crop(config.crop)
    inputs = {
        "data": bank.digest(),
        "heldout": [list(p) for p in heldout.ids] if heldout is not None else None,
        "code": code_digest(),
    }
    name = f"pretrain {config.method} seed {config.seed}"
    resume = should_resume(resume, out, config, inputs, ctx, name)

    method = config.build_method()
    torch.manual_seed(config.seed)
    model = method.build(bank.channels, config.channels)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
    start, state = 0, None
    if resume and (out / CHECKPOINT_NAME).exists():
        start, state = restore(out / CHECKPOINT_NAME, model, generator, config, ctx, name)
    model.to(device=device, memory_format=torch.channels_last_3d)
    optimizer, scheduler = _optimiser(model, config, start, state)
    # encoder-only methods leave the decoder out of the graph, which DDP must be told
    train_model = (
        DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not method.uses_decoder,
        )
        if ctx.enabled
        else model
    )
    return _Run(
        config, out, ctx, device, bank, inputs, name, method, model, train_model, generator, optimizer, scheduler, start
    )


def _optimiser(
    model: torch.nn.Module, config: PretrainConfig, start: int, state: Mapping[str, Any] | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and its schedule, at iteration ``start`` of a resumed run (``state``: its checkpoint)."""
    # BYOL's target network has no gradient and is moved by its method, not by the optimiser
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    if start:
        optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:  # checkpoints written before schedules existed lack it
        group.setdefault("initial_lr", config.lr)
    # last_epoch = start - 1 puts a resumed schedule at iteration ``start`` (the optimizer state holds initial_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(config, i), last_epoch=start - 1)
    return optimizer, scheduler


def _open_log(run: _Run) -> Any:
    """The run's DVCLive log (main process), continued where a resumed run's checkpoint stands."""
    from dvclive import Live

    run.out.mkdir(parents=True, exist_ok=True)
    if run.start:
        truncate_log(run.out / "dvclive", run.start)
    live = Live(str(run.out / "dvclive"), resume=bool(run.start), dvcyaml=False, save_dvc_exp=False, report=None)
    live.log_params({"pretrain": run.config.to_dict()})
    return live


def _train(run: _Run, live: Any, evaluation: HeldoutEvaluation | None, bar: tqdm, progress: bool) -> dict[str, float]:
    """The loop from ``run.start`` to ``config.iterations``: steps, their log, held-out evaluations and
    checkpoints. Returns the last logged loss terms."""
    config = run.config
    terms_now: dict[str, float] = {}
    for iteration in range(run.start, config.iterations):
        run.method.before_step(run.model, iteration, run.bank, config.crop, run.generator, run.optimizer, run.ctx)
        if iteration == 0 and evaluation is not None:
            evaluation(0)
        terms = _step(run, iteration)
        done = iteration + 1
        if done % config.log_every == 0 or done == config.iterations:
            terms_now = terms.as_floats()
            if live is not None:
                live.step = iteration
                for term, value in terms_now.items():
                    live.log_metric(f"train/{term}", value)
                live.next_step()
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms_now.items()}, refresh=False)
        bar.update(1)
        if evaluation is not None and (done % config.eval_every == 0 or done == config.iterations):
            evaluation(done)
        if done % config.checkpoint_every == 0 or done == config.iterations:
            _checkpoint(run, done, terms, progress)
    return terms_now


def _step(run: _Run, iteration: int) -> LossTerms:
    """One optimisation step: the method's crops, inputs and loss, then Adam, the schedule and the method's
    after-step."""
    config, method, device = run.config, run.method, run.device
    crops = method.sample(run.bank, config.batch_size, config.crop, run.generator, config.crop_jitter)
    net_inputs, targets = method.inputs(crops.to(device), run.generator)
    with autocast(device, config.precision):
        outputs = run.train_model(**channels_last(net_inputs, device))
        terms = method.loss(outputs, channels_last(targets, device))
    if not torch.isfinite(terms.total):
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration + 1} ({terms.as_floats()}); the last good checkpoint "
            f"{run.checkpoint_path if run.checkpoint_path.exists() else '(none yet)'} is kept"
        )
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    run.optimizer.step()
    run.scheduler.step()
    method.after_step(run.model, iteration, config.iterations)
    return terms


def _checkpoint(run: _Run, done: int, terms: LossTerms, progress: bool) -> None:
    """Write the whole training state after ``done`` iterations (every process's generator, from the main one)."""
    states = _gather_generator_states(run.ctx, run.generator)
    if run.ctx.is_main:
        _save_state(run.checkpoint_path, run.model, run.optimizer, done, run.config, run.inputs, states)
        if not progress:  # no bar: one line per checkpoint block instead
            progress_line(
                f"{run.name}: iteration {done}/{run.config.iterations}, "
                + ", ".join(f"{term} {value:.4f}" for term, value in terms.as_floats().items())
                + f", {eta(done - run.start, run.config.iterations - run.start, time.perf_counter() - run.began)}"
            )


def _save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: PretrainConfig,
    inputs: Mapping[str, Any],
    generator_states: list[torch.Tensor],
) -> None:
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "config": config.to_dict(),
            "inputs": dict(inputs),
            "model_config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generators": generator_states,
            "torch_rng": torch.get_rng_state(),
        },
        path,
    )


def _gather_generator_states(ctx: DistributedContext, generator: torch.Generator) -> list[torch.Tensor]:
    state = generator.get_state()
    if not ctx.enabled:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _finish(run: _Run, live: Any, provenance: Mapping[str, Any] | None) -> None:
    """Write ``backbone.pt`` with its provenance and close the log (main process), then wait for every process."""
    if run.ctx.is_main:
        config = run.config
        save_backbone(
            run.out / BACKBONE_NAME,
            run.model.backbone,
            method=config.method,
            iterations=config.iterations,
            pretrain=config.to_dict(),
            commit=git_commit(),
            environment=environment(run.device),
            **dict(provenance or {}),
        )
        if live is not None:
            end_live(live)
    if run.ctx.enabled:
        torch.distributed.barrier()


def pretrain_prepared(
    data: str | Path,
    out: str | Path,
    config: PretrainConfig,
    resume: bool | str = False,
    progress: bool = True,
    heldout: HeldOutPairs | None = None,
) -> PretrainResult:
    """Pre-train on the ``train`` split of a prepared dataset (labels, if any, are ignored)."""
    from gvsl.data import load_prepared

    dataset = load_prepared(data)
    cases = dataset.load_split("train")
    if not cases:
        raise GVSLInputError(f"{data}: the train split is empty; nothing to pre-train on")
    provenance = {
        "dataset": str(data),
        "dataset_task": dataset.info.task,
        "dataset_source": dataset.info.source,
        "cases": len(cases),
    }
    return pretrain(
        [c.image for c in cases],
        out,
        config,
        resume=resume,
        ids=[c.id for c in cases],
        provenance=provenance,
        progress=progress,
        heldout=heldout,
    )
