"""The pre-training engine: every method of :mod:`gvsl.methods`, resumable, DDP-ready
(``torchrun --nproc_per_node=N -m gvsl pretrain``).

Per iteration the method draws its crops from the :class:`~gvsl.bank.VolumeBank` (GVSL: pairs of
different subjects at one position), turns them into its inputs (its augmentations), and the
engine minimises the method's loss with Adam (constant learning rate as in the paper, or a
warm-up + cosine schedule for short runs). Checkpoints, resume, DDP, DVCLive, progress and the
non-finite-loss guard are the same for every method. With held-out pairs, every ``eval_every``
iterations the method's loss is measured on held-out subjects (``heldout_loss/``) and a
Z-matching head registers them (``heldout/``, :mod:`gvsl.pretext`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from gvsl.bank import VolumeBank
from gvsl.checkpoint import PRETRAIN_STATE_FORMAT as CHECKPOINT_FORMAT
from gvsl.checkpoint import atomic_save, load_file, save_backbone
from gvsl.errors import GVSLInputError, NonFiniteLossError
from gvsl.methods import PRETRAIN_METHODS, Crops, PretrainMethod, build_method
from gvsl.nets import PAPER_CHANNELS, parse_channels
from gvsl.nets.unet import check_channels
from gvsl.pretext import HeldOutPairs, evaluate_pretext, heldout_pairs
from gvsl.runtime import DistributedContext, code_digest, environment, git_commit, progress_line, setup_distributed
from gvsl.settings import from_mapping

__all__ = ["NonFiniteLossError", "PretrainConfig", "PretrainResult", "VolumeBank", "load_heldout", "lr_factor", "pretrain",
           "pretrain_prepared"]

CHECKPOINT_NAME = "checkpoint.pt"
BACKBONE_NAME = "backbone.pt"
PRETEXT_NAME = "pretext.json"
HELDOUT_LOG = "heldout"
HELDOUT_LOSS_LOG = "heldout_loss"
#: fixed seed of the held-out loss's augmentations: every evaluation sees the same inputs
_HELDOUT_SEED = 12345
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(config: "PretrainConfig", iteration: int) -> float:
    """Multiplier of ``config.lr`` at (0-based) ``iteration``."""
    if config.lr_schedule == "constant":
        return 1.0
    if iteration < config.warmup:
        return (iteration + 1) / (config.warmup + 1)
    progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class PretrainConfig:
    """Settings of one pre-training run (``params.yaml`` → ``pretrain`` group).

    Args:
        method: one of :data:`gvsl.methods.PRETRAIN_METHODS` (GVSL, an ablation or a baseline).
        iterations: optimisation steps (paper 2×10⁵).
        batch_size: pairs per step (paper 2); methods of single crops draw twice as many crops, two-view
            methods this many volumes (see :mod:`gvsl.methods.base`).
        crop: training crop (D, H, W) in voxels.
        channels: nine backbone widths.
        lr: Adam learning rate (paper 1e-4).
        seed: seeds model initialisation, sampling and augmentation.
        checkpoint_every: write ``checkpoint.pt`` every this many iterations (and at the end).
        log_every: log loss terms every this many iterations.
        eval_every: evaluate on the held-out pairs (if given to :func:`pretrain`) every this many
            iterations, before the first one and at the end.
        crop_jitter: largest shift, in voxels per axis, of x_B's crop against x_A's (0: the same position);
            methods that draw pairs only.
        lr_schedule: ``constant`` (the paper) or ``cosine`` (linear warm-up over ``warmup`` iterations,
            then a cosine decay to 0 at ``iterations``), for short schedules.
        warmup: warm-up iterations of the cosine schedule.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
        options: the method's own settings (its ``Options`` dataclass, e.g.
            :class:`gvsl.methods.gvsl.GVSLOptions`); ``params.yaml`` → ``pretrain.options.<method>``.
    """

    method: str = "gvsl"
    iterations: int = 200_000
    batch_size: int = 2
    crop: tuple[int, int, int] = (128, 128, 128)
    channels: tuple[int, ...] = PAPER_CHANNELS
    lr: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 1
    eval_every: int = 1000
    crop_jitter: int = 0
    lr_schedule: str = "constant"
    warmup: int = 0
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.crop = tuple(int(c) for c in self.crop)
        self.channels = tuple(int(c) for c in self.channels)
        if self.method not in PRETRAIN_METHODS:
            raise GVSLInputError(f"method: unknown {self.method!r}; valid: {list(PRETRAIN_METHODS)}")
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise GVSLInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("crop_jitter", "warmup"):
            if int(getattr(self, name)) < 0:
                raise GVSLInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise GVSLInputError(f"lr_schedule: unknown {self.lr_schedule!r}; valid: {list(LR_SCHEDULES)}")
        if self.warmup >= self.iterations and self.lr_schedule == "cosine":
            raise GVSLInputError(f"warmup ({self.warmup}) must be shorter than iterations ({self.iterations})")
        if len(self.crop) != 3 or min(self.crop) < 8:
            raise GVSLInputError(f"crop: expecting three sizes >= 8 voxels (D H W), got {self.crop}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GVSLInputError(f"lr must be a positive number, got {self.lr}")
        check_channels(self.channels, "channels")
        method = self.build_method()
        method.check(self.crop, self.batch_size)
        try:  # the method's own heads (their widths come from the backbone's or the options); no memory used
            with torch.device("meta"):
                method.build(1, self.channels)
        except ValueError as err:
            raise GVSLInputError(f"{self.method}: {err}") from None

    def build_method(self) -> PretrainMethod:
        """The method with its options (a bad option raises :class:`GVSLInputError` here)."""
        return build_method(self.method, self.options)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainConfig":
        return from_mapping(cls, values, "pretrain")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["channels"] = list(self.crop), list(self.channels)
        return d


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


def _truncate_log(live_dir: Path, first_step: int) -> None:
    """Drop rows a resumed run will log again: training rows from iteration ``first_step`` on, held-out
    rows after ``first_step`` iterations (a held-out row's step counts the iterations done before it)."""
    metrics = live_dir / "plots" / "metrics"
    for tsv in metrics.rglob("*.tsv"):
        table = pd.read_csv(tsv, sep="\t")
        heldout = tsv.parent.name in (HELDOUT_LOG, HELDOUT_LOSS_LOG)
        keep = table["step"] <= first_step if heldout else table["step"] < first_step
        table[keep].to_csv(tsv, sep="\t", index=False)


def _save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                config: PretrainConfig, inputs: Mapping[str, Any], generator_states: list[torch.Tensor]) -> None:
    atomic_save({
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "config": config.to_dict(),
        "inputs": dict(inputs),
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generators": generator_states,
        "torch_rng": torch.get_rng_state(),
    }, path)


#: ``pretrain(resume=…)``: continue only from a checkpoint of this very run
RESUME_IF_UNCHANGED = "if-unchanged"


def _keep_matching_run(out: Path, config: PretrainConfig, inputs: Mapping[str, Any], ctx: DistributedContext,
                       name: str) -> bool:
    """Whether ``out`` holds a checkpoint of this run (same settings, data, held-out pairs and code).

    When it does not, everything in ``out`` is removed: an output folder kept across runs (DVC's
    ``persist``) must not mix a stale run's files into the new one.
    """
    import shutil

    checkpoint_path = out / CHECKPOINT_NAME
    changed: list[str] = []
    if checkpoint_path.is_file():
        try:
            state = load_file(checkpoint_path)
        except GVSLInputError:
            changed = ["a checkpoint that cannot be read"]
        else:
            saved_inputs = state.get("inputs") or {}
            changed = [key for key, value in config.to_dict().items() if state.get("config", {}).get(key) != value]
            changed += [key for key, value in inputs.items() if saved_inputs.get(key) != value]
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


def _gather_generator_states(ctx: DistributedContext, generator: torch.Generator) -> list[torch.Tensor]:
    state = generator.get_state()
    if not ctx.enabled:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _channels_last(tensors: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # channels-last 3-D is faster for 3-D convolutions on CPU too (measured: 0.73 vs 0.91 s per default step).
    return {name: t.to(device=device, memory_format=torch.channels_last_3d) if t.ndim == 5 else t.to(device)
            for name, t in tensors.items()}


def pretrain(volumes: Sequence[np.ndarray | torch.Tensor] | VolumeBank, out: str | Path, config: PretrainConfig,
             resume: bool | str = False, ids: Sequence[str] | None = None, provenance: Mapping[str, Any] | None = None,
             progress: bool = True, heldout: HeldOutPairs | None = None) -> PretrainResult:
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
            content of ``out`` is removed and the run starts afresh.
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
    from dvclive import Live

    out = Path(out)
    ctx, device = setup_distributed(config.device)
    bank = volumes if isinstance(volumes, VolumeBank) else VolumeBank(volumes, ids)
    bank.check_crop(config.crop)
    checkpoint_path, backbone_path = out / CHECKPOINT_NAME, out / BACKBONE_NAME
    inputs = {"data": bank.digest(), "heldout": [list(p) for p in heldout.ids] if heldout is not None else None,
              "code": code_digest()}
    name = f"pretrain {config.method} seed {config.seed}"
    if resume == RESUME_IF_UNCHANGED:
        resume = _keep_matching_run(out, config, inputs, ctx, name)
    elif not isinstance(resume, bool):
        raise GVSLInputError(f"resume must be True, False or {RESUME_IF_UNCHANGED!r}, got {resume!r}")
    if checkpoint_path.exists() and not resume:
        raise GVSLInputError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")

    method = config.build_method()
    torch.manual_seed(config.seed)
    model = method.build(bank.channels, config.channels)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
    start = 0
    if resume and checkpoint_path.exists():
        state = load_file(checkpoint_path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise GVSLInputError(f"{checkpoint_path}: not a pre-training checkpoint (format {state.get('format')!r})")
        built = model.config.to_dict()
        if state["model_config"] != built:
            changed = sorted(k for k in {*built, *state["model_config"]} if state["model_config"].get(k) != built.get(k))
            raise GVSLInputError(f"{checkpoint_path}: was written with other {', '.join(changed)} "
                                 f"({ {k: state['model_config'].get(k) for k in changed} }) than this run's "
                                 f"({ {k: built.get(k) for k in changed} }); start afresh or keep them")
        _check_schedule(checkpoint_path, state.get("config", {}), config)
        model.load_state_dict(state["model"])
        start = int(state["iteration"])
        if len(state["generators"]) != ctx.world_size:
            raise GVSLInputError(f"{checkpoint_path}: written by {len(state['generators'])} process(es), "
                                 f"resumed with {ctx.world_size}")
        generator.set_state(state["generators"][ctx.rank])
        torch.set_rng_state(state["torch_rng"])
        if ctx.is_main:
            progress_line(f"{name}: resumed from iteration {start}")
    model.to(device=device, memory_format=torch.channels_last_3d)
    cuda = device.type == "cuda"
    # BYOL's target network has no gradient and is moved by its method, not by the optimiser
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    if start:
        optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:  # checkpoints written before schedules existed lack it
        group.setdefault("initial_lr", config.lr)
    # last_epoch = start - 1 puts a resumed schedule at iteration ``start`` (the optimizer state holds initial_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(config, i), last_epoch=start - 1)
    # encoder-only methods leave the decoder out of the graph, which DDP must be told
    train_model = (DistributedDataParallel(model, device_ids=[device.index] if cuda else None,
                                           find_unused_parameters=not method.uses_decoder)
                   if ctx.enabled else model)

    evaluate = heldout is not None and ctx.is_main
    registers = evaluate and method.registers
    heldout_crops = method.heldout_crops(heldout) if evaluate else None
    live = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if start:
            _truncate_log(out / "dvclive", start)
        live = Live(str(out / "dvclive"), resume=bool(start), dvcyaml=False, save_dvc_exp=False, report=None)
        live.log_params({"pretrain": config.to_dict()})
    first_scores = _read_pretext(out / PRETEXT_NAME, heldout) if start and registers else None
    bar = tqdm(total=config.iterations, initial=start, disable=not (progress and ctx.is_main), desc=name,
               dynamic_ncols=True)
    terms_now: dict[str, float] = {}
    began = time.perf_counter()
    for iteration in range(start, config.iterations):
        method.before_step(model, iteration, bank, config.crop, generator, optimizer, ctx)
        if iteration == 0 and evaluate:
            _log_heldout_loss(live, method, model, heldout_crops, config.batch_size, device, 0)
            if registers:
                first_scores = _log_heldout(live, model, heldout, 0)
                _write_pretext(out / PRETEXT_NAME, heldout, first_scores, first_scores)
        crops = method.sample(bank, config.batch_size, config.crop, generator, config.crop_jitter)
        net_inputs, targets = method.inputs(crops.to(device), generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            outputs = train_model(**_channels_last(net_inputs, device))
            terms = method.loss(outputs, _channels_last(targets, device))
        if not torch.isfinite(terms.total):
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration + 1} ({terms.as_floats()}); the last good checkpoint "
                f"{checkpoint_path if checkpoint_path.exists() else '(none yet)'} is kept")
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(model, iteration, config.iterations)
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
        if evaluate and (done % config.eval_every == 0 or done == config.iterations):
            _log_heldout_loss(live, method, model, heldout_crops, config.batch_size, device, done)
            if registers:
                _write_pretext(out / PRETEXT_NAME, heldout, first_scores, _log_heldout(live, model, heldout, done))
        if done % config.checkpoint_every == 0 or done == config.iterations:
            states = _gather_generator_states(ctx, generator)
            if ctx.is_main:
                _save_state(checkpoint_path, model, optimizer, done, config, inputs, states)
                if not progress:  # no bar: one line per checkpoint block instead
                    progress_line(f"{name}: iteration {done}/{config.iterations}, "
                                  + ", ".join(f"{term} {value:.4f}" for term, value in terms.as_floats().items()))
    bar.close()
    seconds = time.perf_counter() - began
    if ctx.is_main:
        save_backbone(backbone_path, model.backbone, method=config.method, iterations=config.iterations,
                      pretrain=config.to_dict(), commit=git_commit(), environment=environment(device),
                      **dict(provenance or {}))
        if live is not None:
            live.end()
    if ctx.enabled:
        torch.distributed.barrier()
    steps = config.iterations - start
    return PretrainResult(out, backbone_path, checkpoint_path, config.iterations, terms_now, seconds,
                          steps / seconds if seconds > 0 else float("nan"))


@torch.no_grad()
def _log_heldout_loss(live: Any, method: PretrainMethod, model: torch.nn.Module, crops: Crops, batch_size: int,
                      device: torch.device, done: int) -> None:
    """The method's loss terms on the held-out crops, logged under ``heldout_loss/``: in chunks of at least
    one step's size (a contrastive loss depends on its batch), weighted by chunk size, with augmentations
    from a fixed seed so that every evaluation sees the same inputs, at the training precision."""
    generator = torch.Generator().manual_seed(_HELDOUT_SEED)
    chunks = max(1, len(crops) // method.crops_per_step(batch_size))
    sums: dict[str, float] = {}
    for part in torch.tensor_split(torch.arange(len(crops)), chunks):
        chunk = crops[int(part[0]):int(part[-1]) + 1].to(device)
        net_inputs, targets = method.inputs(chunk, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            terms = method.loss(model(**_channels_last(net_inputs, device)), _channels_last(targets, device))
        for term, value in terms.as_floats().items():
            sums[term] = sums.get(term, 0.0) + value * len(part)
    live.step = done
    for term, value in sums.items():
        live.log_metric(f"{HELDOUT_LOSS_LOG}/{term}", value / len(crops))


def _log_heldout(live: Any, model: torch.nn.Module, heldout: HeldOutPairs, done: int) -> dict[str, Any]:
    """Register the held-out pairs after ``done`` iterations and log the means under ``heldout/``."""
    scores = evaluate_pretext(model, heldout)
    means = scores.summary()
    live.step = done
    for name, value in means.items():
        live.log_metric(f"{HELDOUT_LOG}/{name}", value)
    return {"iteration": done, "mean": means, "per_pair": scores.per_pair()}


def _write_pretext(path: Path, heldout: HeldOutPairs, first: Mapping[str, Any], last: Mapping[str, Any]) -> None:
    record = {"pairs": [list(p) for p in heldout.ids], "first": first, "last": last, "iterations": last["iteration"]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def _read_pretext(path: Path, heldout: HeldOutPairs) -> dict[str, Any]:
    """The first evaluation of the run being resumed (written before its first iteration)."""
    if not path.is_file():
        raise GVSLInputError(f"{path}: missing; a run with held-out evaluation writes it before its first "
                             "iteration, so this checkpoint comes from a run without it (resume without held-out "
                             "pairs, or start afresh)")
    record = json.loads(path.read_text())
    if record["pairs"] != [list(p) for p in heldout.ids]:
        raise GVSLInputError(f"{path}: was evaluated on other held-out pairs than this run's")
    return record["first"]


#: settings a resumed run must share with its checkpoint for the learning rate to continue as it was
_SCHEDULE_KEYS = ("lr", "lr_schedule", "warmup")


def _check_schedule(path: Path, saved: Mapping[str, Any], config: "PretrainConfig") -> None:
    now = config.to_dict()
    changed = [k for k in _SCHEDULE_KEYS if k in saved and saved[k] != now[k]]
    if config.lr_schedule != "constant" and saved.get("iterations", config.iterations) != config.iterations:
        changed.append("iterations")  # a decaying schedule is defined by the run's length
    if changed:
        raise GVSLInputError(f"{path}: resuming with other {', '.join(changed)} than the checkpoint was trained with "
                             f"({ {k: saved.get(k) for k in changed} }); start afresh or keep them")


def load_heldout(data: str | Path, split: str, crop: Sequence[int], pairs: int, seed: int = 0) -> HeldOutPairs:
    """Held-out pairs from ``split`` of a prepared dataset (labels, when it has them, give the Dice)."""
    from gvsl.data import load_prepared

    if split == "test":
        raise GVSLInputError("held-out split must not be 'test': the test split is for Table 1")

    dataset = load_prepared(data)
    cases = dataset.load_split(split)
    if len(cases) < 2:
        raise GVSLInputError(f"{data}: the {split} split has {len(cases)} case(s); held-out evaluation needs two")
    classes = len(dataset.info.classes) + 1 if dataset.info.task_type == "segmentation" else None
    return heldout_pairs(cases, crop, pairs, seed, num_classes=classes)


def pretrain_prepared(data: str | Path, out: str | Path, config: PretrainConfig, resume: bool | str = False,
                      progress: bool = True, heldout: HeldOutPairs | None = None) -> PretrainResult:
    """Pre-train on the ``train`` split of a prepared dataset (labels, if any, are ignored)."""
    from gvsl.data import load_prepared

    dataset = load_prepared(data)
    cases = dataset.load_split("train")
    if not cases:
        raise GVSLInputError(f"{data}: the train split is empty; nothing to pre-train on")
    provenance = {"dataset": str(data), "dataset_task": dataset.info.task, "dataset_source": dataset.info.source,
                  "cases": len(cases)}
    return pretrain([c.image for c in cases], out, config, resume=resume, ids=[c.id for c in cases],
                    provenance=provenance, progress=progress, heldout=heldout)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PretrainConfig()
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset folder (gvsl prepare)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for checkpoint.pt, backbone.pt, dvclive/")
    parser.add_argument("--method", default=defaults.method, choices=list(PRETRAIN_METHODS),
                        help="GVSL, an ablation or a baseline (see gvsl.methods)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the method, e.g. --option temperature=0.2 for simclr (repeatable; "
                        "values are read as YAML)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--crop", type=int, nargs=3, metavar=("D", "H", "W"), default=list(defaults.crop))
    parser.add_argument("--crop-jitter", type=int, default=defaults.crop_jitter,
                        help="largest shift (voxels) of x_B's crop against x_A's; default 0, the same position")
    parser.add_argument("--channels", default=",".join(map(str, defaults.channels)), help="nine backbone widths")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lr-schedule", default=defaults.lr_schedule, choices=LR_SCHEDULES)
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="warm-up iterations (cosine schedule)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--heldout", type=Path, help="prepared dataset whose --heldout-split subjects are "
                        "evaluated on every --eval-every iterations (never trained on): the method's loss, "
                        "and registration by a Z-matching head")
    parser.add_argument("--heldout-split", default="val", help="split of --heldout (default val)")
    parser.add_argument("--heldout-pairs", type=int, default=20, help="ordered pairs of different subjects")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", …]`` → ``{key: YAML value}`` (``--option``)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise GVSLInputError(f"--option: expecting KEY=VALUE, got {pair!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise GVSLInputError(f"--option {key}: unreadable value {value!r} ({error})") from None
    return options


def run(args: argparse.Namespace) -> int:
    config = PretrainConfig(method=args.method, options=parse_options(args.option), iterations=args.iterations, batch_size=args.batch_size,
                            crop=tuple(args.crop), crop_jitter=args.crop_jitter, channels=parse_channels(args.channels),
                            lr=args.lr, lr_schedule=args.lr_schedule, warmup=args.warmup, seed=args.seed,
                            checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                            eval_every=args.eval_every, device=args.device)
    heldout = (load_heldout(args.heldout, args.heldout_split, config.crop, args.heldout_pairs)
               if args.heldout is not None else None)
    result = pretrain_prepared(args.data, args.out, config, resume=args.resume, heldout=heldout)
    print(f"wrote {result.backbone} ({result.iterations} iterations, {result.steps_per_second:.2f} steps/s)")
    return 0
