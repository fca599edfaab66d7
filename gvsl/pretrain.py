"""GVSL pre-training: every Table 1 variant, resumable, DDP-ready (``torchrun --nproc_per_node=N -m gvsl pretrain``).

Per iteration (paper Sec. 3 and appendix): draw ``batch_size`` pairs of different subjects, crop
both at one random position (the authors feed whole volumes, so a pair always shares its field of
view), corrupt x_A with the appearance transform, apply one spatial transform to x_A, t'(x_A) and
x_B, run the model on (t'(x_A), x_B) and minimise L_NCC + L_smooth + L_MSE against the clean x_A
with Adam (constant learning rate as in the paper, or a warm-up + cosine schedule for short runs).
With held-out pairs, the Z-matching head registers them every ``eval_every`` iterations
(:mod:`gvsl.pretext`), logged under ``heldout/`` beside the training terms.
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

from gvsl.checkpoint import PRETRAIN_STATE_FORMAT as CHECKPOINT_FORMAT
from gvsl.checkpoint import atomic_save, load_file, save_backbone
from gvsl.errors import GVSLInputError, NonFiniteLossError
from gvsl.losses import GVSLLoss
from gvsl.nets import GVSL, PAPER_CHANNELS, VARIANTS, parse_channels
from gvsl.pretext import HeldOutPairs, evaluate_pretext, heldout_pairs
from gvsl.runtime import DistributedContext, git_commit, progress_line, setup_distributed
from gvsl.settings import from_mapping
from gvsl.views import AppearanceTransform, RandSpatialTransform, make_views

__all__ = ["NonFiniteLossError", "PretrainConfig", "PretrainResult", "VolumeBank", "load_heldout", "lr_factor", "pretrain",
           "pretrain_prepared"]

CHECKPOINT_NAME = "checkpoint.pt"
BACKBONE_NAME = "backbone.pt"
PRETEXT_NAME = "pretext.json"
HELDOUT_LOG = "heldout"
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
        variant: one of :data:`gvsl.nets.VARIANTS`.
        iterations: optimisation steps (paper 2×10⁵).
        batch_size: pairs per step (paper 2).
        crop: training crop (D, H, W) in voxels.
        channels: nine backbone widths.
        lr: Adam learning rate (paper 1e-4).
        seed: seeds model initialisation, sampling and augmentation.
        checkpoint_every: write ``checkpoint.pt`` every this many iterations (and at the end).
        log_every: log loss terms every this many iterations.
        eval_every: register the held-out pairs (if given to :func:`pretrain`) every this many
            iterations, before the first one and at the end.
        crop_jitter: largest shift, in voxels per axis, of x_B's crop against x_A's (0: the same position).
        lr_schedule: ``constant`` (the paper) or ``cosine`` (linear warm-up over ``warmup`` iterations,
            then a cosine decay to 0 at ``iterations``), for short schedules.
        warmup: warm-up iterations of the cosine schedule.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
        appearance: keyword arguments of :class:`gvsl.views.AppearanceTransform`.
        spatial: keyword arguments of :class:`gvsl.views.RandSpatialTransform`.
    """

    variant: str = "gvsl"
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
    affine_channels: int = 256
    local_head_channels: int = 16
    appearance: dict[str, Any] = field(default_factory=dict)
    spatial: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.crop = tuple(int(c) for c in self.crop)
        self.channels = tuple(int(c) for c in self.channels)
        if self.variant not in VARIANTS:
            raise GVSLInputError(f"variant: unknown {self.variant!r}; valid: {sorted(VARIANTS)}")
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

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainConfig":
        return from_mapping(cls, values, "pretrain")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["channels"] = list(self.crop), list(self.channels)
        return d


class VolumeBank:
    """Pre-training volumes cached in memory, sampled as pairs of different subjects cropped at one position.

    The authors feed whole volumes, so x_A and x_B always share one field of view. A crop keeps that
    property only if both images are cut at the same place: ``sample_pairs`` draws one normalised
    position per pair, a fraction of each axis' free range (volume size − crop size), and cuts both
    volumes there; for volumes of one shape (the generated cohorts) the crops coincide. An optional
    jitter moves x_B's crop by up to ``jitter`` voxels per axis.

    Args:
        volumes: arrays (D, H, W) or (C, D, H, W), intensities already normalised.
        ids: a name per volume for error messages.
    """

    def __init__(self, volumes: Sequence[np.ndarray | torch.Tensor], ids: Sequence[str] | None = None):
        ids = list(ids) if ids is not None else [f"volume {i}" for i in range(len(volumes))]
        if len(volumes) < 2:
            raise GVSLInputError(f"pre-training needs at least two volumes (pairs of different subjects), got {len(volumes)}")
        self.ids = ids
        self.volumes = []
        for vid, v in zip(ids, volumes):
            t = torch.as_tensor(np.asarray(v, dtype=np.float32))
            if t.ndim == 3:
                t = t[None]
            if t.ndim != 4:
                raise GVSLInputError(f"{vid}: expecting a 3-D volume (D, H, W) or (C, D, H, W), got shape {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise GVSLInputError(f"{vid}: holds NaN or Inf voxels")
            self.volumes.append(t.contiguous())
        channels = {t.shape[0] for t in self.volumes}
        if len(channels) != 1:
            raise GVSLInputError(f"volumes disagree on channel count: {sorted(channels)}")
        self.channels = channels.pop()

    def check_crop(self, crop: Sequence[int]) -> None:
        for vid, t in zip(self.ids, self.volumes):
            if any(c > s for c, s in zip(crop, t.shape[1:])):
                raise GVSLInputError(f"{vid}: crop {tuple(crop)} is larger than the volume {tuple(t.shape[1:])}")

    def crop_start(self, index: int, crop: Sequence[int], position: Sequence[float],
                   offset: Sequence[int] = (0, 0, 0)) -> tuple[int, int, int]:
        """Corner of the crop of volume ``index`` at normalised ``position`` in [0, 1) per axis (each of the
        ``size − crop + 1`` corners equally likely for a uniform position), moved by ``offset`` voxels and
        kept inside the volume."""
        shape = self.volumes[index].shape[1:]
        return tuple(min(max(math.floor(p * (s - c + 1)) + o, 0), s - c)  # type: ignore[return-value]
                     for p, s, c, o in zip(position, shape, crop, offset))

    def _crop(self, index: int, crop: Sequence[int], start: Sequence[int]) -> torch.Tensor:
        t = self.volumes[index]
        return t[:, start[0]:start[0] + crop[0], start[1]:start[1] + crop[1], start[2]:start[2] + crop[2]]

    def sample_pairs(self, batch: int, crop: Sequence[int], generator: torch.Generator,
                     jitter: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, *crop) crops of x_A and x_B, each pair from two different volumes at one normalised position."""
        n = len(self.volumes)
        first = torch.randint(0, n, (batch,), generator=generator)
        # Shift by 1..n-1 so x_B is always another subject.
        second = (first + torch.randint(1, n, (batch,), generator=generator)) % n
        positions = torch.rand(batch, 3, generator=generator, dtype=torch.float64).tolist()
        offsets = (torch.randint(-jitter, jitter + 1, (batch, 3), generator=generator).tolist() if jitter
                   else [(0, 0, 0)] * batch)
        x_a = torch.stack([self._crop(int(i), crop, self.crop_start(int(i), crop, p))
                           for i, p in zip(first, positions)])
        x_b = torch.stack([self._crop(int(j), crop, self.crop_start(int(j), crop, p, o))
                           for j, p, o in zip(second, positions, offsets)])
        return x_a, x_b


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
        keep = table["step"] <= first_step if tsv.parent.name == HELDOUT_LOG else table["step"] < first_step
        table[keep].to_csv(tsv, sep="\t", index=False)


def _save_state(path: Path, model: GVSL, optimizer: torch.optim.Optimizer, iteration: int,
                config: PretrainConfig, generator_states: list[torch.Tensor]) -> None:
    atomic_save({
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "config": config.to_dict(),
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generators": generator_states,
        "torch_rng": torch.get_rng_state(),
    }, path)


def _gather_generator_states(ctx: DistributedContext, generator: torch.Generator) -> list[torch.Tensor]:
    state = generator.get_state()
    if not ctx.enabled:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def pretrain(volumes: Sequence[np.ndarray | torch.Tensor] | VolumeBank, out: str | Path, config: PretrainConfig,
             resume: bool = False, ids: Sequence[str] | None = None, provenance: Mapping[str, Any] | None = None,
             progress: bool = True, heldout: HeldOutPairs | None = None) -> PretrainResult:
    """Pre-train GVSL (or an ablation) on ``volumes`` and write ``out/backbone.pt``.

    Args:
        volumes: normalised volumes, or a :class:`VolumeBank`.
        out: output folder: ``checkpoint.pt`` (full training state, every ``checkpoint_every``
            iterations), ``backbone.pt`` (the pretrained U-Net with its config and provenance),
            ``dvclive/`` (loss terms per iteration, ``heldout/*`` per evaluation) and, with ``heldout``,
            ``pretext.json`` (the first and last held-out evaluation, per pair).
        config: run settings.
        resume: continue from ``out/checkpoint.pt``; the run ends with the same weights as an
            uninterrupted one (same device and seed). Without a checkpoint the run starts afresh.
        ids: names of the volumes for error messages.
        provenance: recorded in ``backbone.pt`` (data source, profile…).
        progress: show a progress bar (main process only).
        heldout: pairs of subjects the run never trains on, registered every ``config.eval_every``
            iterations by the Z-matching head (:mod:`gvsl.pretext`); ignored by ``no_zmatch``.

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
    if checkpoint_path.exists() and not resume:
        raise GVSLInputError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")

    torch.manual_seed(config.seed)
    model = GVSL.variant(config.variant, in_channels=bank.channels, channels=config.channels,
                         affine_channels=config.affine_channels, local_head_channels=config.local_head_channels)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
    start = 0
    if resume and checkpoint_path.exists():
        state = load_file(checkpoint_path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise GVSLInputError(f"{checkpoint_path}: not a pre-training checkpoint (format {state.get('format')!r})")
        if state["model_config"] != model.config.to_dict():
            raise GVSLInputError(f"{checkpoint_path}: was written for model {state['model_config']}, "
                                 f"this run builds {model.config.to_dict()}")
        _check_schedule(checkpoint_path, state.get("config", {}), config)
        model.load_state_dict(state["model"])
        start = int(state["iteration"])
        if len(state["generators"]) != ctx.world_size:
            raise GVSLInputError(f"{checkpoint_path}: written by {len(state['generators'])} process(es), "
                                 f"resumed with {ctx.world_size}")
        generator.set_state(state["generators"][ctx.rank])
        torch.set_rng_state(state["torch_rng"])
    # channels-last 3-D is faster for 3-D convolutions on CPU too (measured: 0.73 vs 0.91 s per default step).
    model.to(device=device, memory_format=torch.channels_last_3d)
    cuda = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if start:
        optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:  # checkpoints written before schedules existed lack it
        group.setdefault("initial_lr", config.lr)
    # last_epoch = start - 1 puts a resumed schedule at iteration ``start`` (the optimizer state holds initial_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(config, i), last_epoch=start - 1)
    train_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None) if ctx.enabled else model

    appearance = AppearanceTransform(**config.appearance)
    spatial = RandSpatialTransform(**config.spatial)
    criterion = GVSLLoss()
    evaluate = heldout is not None and model.z_matching and ctx.is_main
    live = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if start:
            _truncate_log(out / "dvclive", start)
        live = Live(str(out / "dvclive"), resume=bool(start), dvcyaml=False, save_dvc_exp=False, report=None)
        live.log_params({"pretrain": config.to_dict()})
    first_scores = _read_pretext(out / PRETEXT_NAME, heldout) if start and evaluate else None
    if evaluate and start == 0:
        first_scores = _log_heldout(live, model, heldout, 0)
        _write_pretext(out / PRETEXT_NAME, heldout, first_scores, first_scores)
    bar = tqdm(total=config.iterations, initial=start, disable=not (progress and ctx.is_main),
               desc=f"pretrain {config.variant} seed {config.seed}", dynamic_ncols=True)
    terms_now: dict[str, float] = {}
    began = time.perf_counter()
    for iteration in range(start, config.iterations):
        x_a, x_b = bank.sample_pairs(config.batch_size, config.crop, generator, config.crop_jitter)
        views = make_views(x_a.to(device), x_b.to(device), appearance, spatial, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            output = train_model(views.view_a.to(memory_format=torch.channels_last_3d),
                                 views.image_b.to(memory_format=torch.channels_last_3d))
            terms = criterion(output, views.target_a)
        if not torch.isfinite(terms.total):
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration + 1} ({terms.as_floats()}); the last good checkpoint "
                f"{checkpoint_path if checkpoint_path.exists() else '(none yet)'} is kept")
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        if done % config.log_every == 0 or done == config.iterations:
            terms_now = terms.as_floats()
            if live is not None:
                live.step = iteration
                for name, value in terms_now.items():
                    live.log_metric(f"train/{name}", value)
                live.next_step()
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms_now.items()}, refresh=False)
        bar.update(1)
        if evaluate and (done % config.eval_every == 0 or done == config.iterations):
            _write_pretext(out / PRETEXT_NAME, heldout, first_scores, _log_heldout(live, model, heldout, done))
        if done % config.checkpoint_every == 0 or done == config.iterations:
            states = _gather_generator_states(ctx, generator)
            if ctx.is_main:
                _save_state(checkpoint_path, model, optimizer, done, config, states)
                if not progress:  # no bar: one line per checkpoint block instead
                    progress_line(f"pretrain {config.variant} seed {config.seed}: iteration {done}/{config.iterations}, "
                                  + ", ".join(f"{name} {value:.4f}" for name, value in terms.as_floats().items()))
    bar.close()
    seconds = time.perf_counter() - began
    if ctx.is_main:
        save_backbone(backbone_path, model.backbone, variant=config.variant, iterations=config.iterations,
                      pretrain=config.to_dict(), commit=git_commit(), **dict(provenance or {}))
        if live is not None:
            live.end()
    if ctx.enabled:
        torch.distributed.barrier()
    steps = config.iterations - start
    return PretrainResult(out, backbone_path, checkpoint_path, config.iterations, terms_now, seconds,
                          steps / seconds if seconds > 0 else float("nan"))


def _log_heldout(live: Any, model: GVSL, heldout: HeldOutPairs, done: int) -> dict[str, Any]:
    """Evaluate the held-out pairs after ``done`` iterations and log the means under ``heldout/``."""
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

    dataset = load_prepared(data)
    cases = dataset.load_split(split)
    if len(cases) < 2:
        raise GVSLInputError(f"{data}: the {split} split has {len(cases)} case(s); held-out evaluation needs two")
    classes = len(dataset.info.classes) + 1 if dataset.info.task_type == "segmentation" else None
    return heldout_pairs(cases, crop, pairs, seed, num_classes=classes)


def pretrain_prepared(data: str | Path, out: str | Path, config: PretrainConfig, resume: bool = False,
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
    parser.add_argument("--variant", default=defaults.variant, choices=sorted(VARIANTS))
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
                        "registered every --eval-every iterations (never trained on)")
    parser.add_argument("--heldout-split", default="val", help="split of --heldout (default val)")
    parser.add_argument("--heldout-pairs", type=int, default=20, help="ordered pairs of different subjects")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def run(args: argparse.Namespace) -> int:
    config = PretrainConfig(variant=args.variant, iterations=args.iterations, batch_size=args.batch_size,
                            crop=tuple(args.crop), crop_jitter=args.crop_jitter, channels=parse_channels(args.channels),
                            lr=args.lr, lr_schedule=args.lr_schedule, warmup=args.warmup, seed=args.seed,
                            checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                            eval_every=args.eval_every, device=args.device)
    heldout = (load_heldout(args.heldout, args.heldout_split, config.crop, args.heldout_pairs)
               if args.heldout is not None else None)
    result = pretrain_prepared(args.data, args.out, config, resume=args.resume, heldout=heldout)
    print(f"wrote {result.backbone} ({result.iterations} iterations, {result.steps_per_second:.2f} steps/s)")
    return 0
