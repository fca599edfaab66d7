"""Training a transfer protocol: the optimisation loop, best-on-validation selection, the test and the run's log.

Where the paper is silent: ties between validation scores keep the earliest iteration (the authors
keep the latest). With ``stop_on_plateau`` a run ends at the first validation where its curve has
plateaued (:class:`gvsl.transfer.config.PlateauRule`), the default profile's criterion of convergence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gvsl.errors import GVSLInputError, NonFiniteLossError
from gvsl.nets.unet import UNet3D
from gvsl.runtime import autocast, end_live, resolve_device
from gvsl.transfer.cases import Case, _CropSampler, _prepare, _Prepared
from gvsl.transfer.config import TransferConfig
from gvsl.transfer.metrics import _class_names, evaluate_cases, validate
from gvsl.transfer.model import TransferModel, build_transfer_model
from gvsl.transfer.objectives import _loss_function

__all__ = ["TransferResult", "run_transfer"]


@dataclass
class TransferResult:
    """Outcome of :func:`run_transfer`.

    Attributes:
        best_iteration: iteration (1-based) whose weights scored best on validation.
        best_val_metric: that validation score.
        val_curve: ``(iteration, validation score)`` for every validation (paper Fig. 6).
        test: test metrics: segmentation ``dice/<class>`` and ``mean_dice``; classification ``auc``.
        model: the trained model carrying the best weights, on the training device.
        metric_name: ``mean_dice`` or ``auc``.
        seconds: wall time of the training loop (validations included).
        seconds_per_iteration: training steps only (validations excluded).
        iterations: steps run (fewer than ``config.iterations`` when the run stopped on a plateau).
        converged: the validation curve had plateaued at its last validation.
        test_cases: the test split's per-case scores (:func:`gvsl.transfer.metrics.evaluate_cases`).
        train_loss: the training loss of every iteration.
    """

    best_iteration: int
    best_val_metric: float
    val_curve: list[tuple[int, float]]
    test: dict[str, float]
    model: TransferModel
    metric_name: str
    seconds: float
    seconds_per_iteration: float
    iterations: int = 0
    converged: bool = False
    test_cases: dict[str, list] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)


def _is_better(score: float, best: float | None) -> bool:
    """Strictly higher wins (ties keep the earlier iteration); any number beats NaN."""
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(score)
    return score > best


class _Selection:
    """The validation curve and the best state on it: its score, iteration and a copy of the weights then."""

    def __init__(self):
        self.curve: list[tuple[int, float]] = []
        self.score: float | None = None
        self.iteration = 0
        self.state: dict[str, torch.Tensor] = {}

    def add(self, iteration: int, score: float, model: TransferModel) -> None:
        self.curve.append((iteration, score))
        if _is_better(score, self.score):
            self.score, self.iteration = score, iteration
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Log:
    """The run's DVCLive folder, or nothing without one."""

    def __init__(self, log_dir: str | Path | None, config: TransferConfig):
        self.live = None
        if log_dir is not None:
            # dvclive comes with the pipeline extra; runs without a log folder do without it.
            from dvclive import Live

            self.live = Live(str(log_dir), dvcyaml=False, save_dvc_exp=False, report=None)
            self.live.log_params({"transfer": config.to_dict()})

    def loss(self, iteration: int, value: float) -> None:
        if self.live is not None:
            self.live.step = iteration
            self.live.log_metric("train/loss", value)

    def validation(self, metric_name: str, score: float) -> None:
        if self.live is not None:
            self.live.log_metric(f"val/{metric_name}", score)
            self.live.make_summary()

    def end(self, selection: _Selection, metric_name: str, test_metrics: dict[str, float], converged: bool) -> None:
        if self.live is None:
            return
        self.live.log_metric("converged", int(converged), plot=False)
        self.live.log_metric("best_iteration", selection.iteration, plot=False)
        self.live.log_metric(f"best_val/{metric_name}", selection.score, plot=False)
        for name, value in test_metrics.items():
            self.live.log_metric(f"test/{name}", value, plot=False)
        end_live(self.live)


def _check_evaluation_splits(
    val: Sequence[Case], test: Sequence[Case], config: TransferConfig, in_channels: int
) -> None:
    """Check the validation and test cases before training rather than at their first evaluation."""
    for split, cases in (("validation", val), ("test", test)):
        prepared = _prepare(cases, split, in_channels, config.task, config.num_classes)
        if config.task == "classification" and len({c.target for c in prepared}) < 2:
            raise GVSLInputError(
                f"{split} split: ROC AUC needs both targets 0 and 1, all {len(prepared)} case(s) "
                f"have target {prepared[0].target}"
            )


def _caches_features(
    train_cases: list[_Prepared], val: Sequence[Case], test: Sequence[Case], config: TransferConfig
) -> bool:
    # A linear probe on whole-volume crops sees the same inputs every epoch: cache its frozen features.
    whole_volumes = all(tuple(c.image.shape[1:]) == tuple(config.crop) for c in train_cases) and all(
        tuple(np.shape(c.image)[-3:]) == tuple(config.crop) for c in (*val, *test)
    )
    return config.protocol == "linear" and whole_volumes


def run_transfer(
    backbone: UNet3D,
    train: Sequence[Case],
    val: Sequence[Case],
    test: Sequence[Case],
    config: TransferConfig,
    log_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
) -> TransferResult:
    """Train a head (linear) or the whole network (fine-tune) on ``train``, keep the best on ``val``, score ``test``.

    Validation runs every ``config.val_every`` iterations and after the last; the best state
    (strictly higher score; ties keep the earliest) is deep-copied and loaded back before testing.
    With ``config.stop_on_plateau`` the run ends at the first validation where the curve has
    plateaued; either way the result says whether it had.
    ``backbone`` itself is never modified (the model trains a copy).

    Args:
        backbone: pretrained (or freshly initialised, for "scratch") U-Net.
        train, val, test: the splits.
        config: run settings.
        log_dir: if given, a DVCLive folder: ``train/loss`` per iteration, ``val/<metric>`` per
            validation (step = iteration), test metrics in the summary.
        class_names: segmentation class names by id (background included) for the test metrics.
        progress: show a progress bar.

    Raises:
        GVSLInputError: bad cases or settings (empty split, label values ≥ num_classes, missing
            targets, crop larger than a training volume, a split with one classification target).
        NonFiniteLossError: the loss became NaN or Inf.
    """
    for split, cases in (("training", train), ("validation", val), ("test", test)):
        if not cases:
            raise GVSLInputError(f"empty {split} split")
    if config.task == "segmentation":
        _class_names(class_names, config.num_classes)  # fail before training, not after it
    device = resolve_device(config.device)
    train_cases = _prepare(train, "training", backbone.in_channels, config.task, config.num_classes)
    _check_evaluation_splits(val, test, config, backbone.in_channels)
    sampler = _CropSampler(train_cases, config, torch.Generator().manual_seed(config.seed))
    model = build_transfer_model(backbone, config, cache_features=_caches_features(train_cases, val, test, config)).to(
        device=device, memory_format=torch.channels_last_3d
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    loss_function = _loss_function(config, train_cases, device)
    log = _Log(log_dir, config)

    began = time.perf_counter()
    selection, losses, step_seconds = _optimise(
        model, sampler, optimizer, loss_function, val, config, device, log, progress
    )
    seconds = time.perf_counter() - began

    model.load_state_dict(selection.state)
    test_metrics, test_cases = evaluate_cases(model, test, config, class_names)
    converged = config.plateau.reached(selection.curve)
    log.end(selection, config.metric_name, test_metrics, converged)
    return TransferResult(
        selection.iteration,
        selection.score,
        selection.curve,
        test_metrics,
        model,
        config.metric_name,
        seconds,
        step_seconds / len(losses),
        len(losses),
        converged,
        test_cases,
        losses,
    )


def _optimise(
    model: TransferModel,
    sampler: _CropSampler,
    optimizer: torch.optim.Optimizer,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    val: Sequence[Case],
    config: TransferConfig,
    device: torch.device,
    log: _Log,
    progress: bool,
) -> tuple[_Selection, list[float], float]:
    """The training loop: up to ``config.iterations`` steps, validating every ``config.val_every`` and after the
    last; with ``config.stop_on_plateau`` it ends at the first validation where the curve has plateaued.

    Returns the validations, the loss of every iteration and the seconds spent in training steps
    (validations excluded).
    """
    selection = _Selection()
    losses: list[float] = []
    step_seconds = 0.0
    bar = tqdm(
        total=config.iterations,
        disable=not progress,
        desc=f"transfer {config.task} {config.protocol}",
        dynamic_ncols=True,
    )
    model.train()
    for done in range(1, config.iterations + 1):
        step_began = time.perf_counter()
        images, targets = sampler.sample(config.batch_size)
        images = images.to(device, memory_format=torch.channels_last_3d)
        with autocast(device, config.precision):
            logits = model(images)
        loss = loss_function(logits.float(), targets.to(device))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss {float(loss)} at iteration {done}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_seconds += time.perf_counter() - step_began
        losses.append(loss.item())
        log.loss(done, losses[-1])
        if done % config.val_every == 0 or done == config.iterations:
            score = float(validate(model, val, config))
            selection.add(done, score, model)
            log.validation(config.metric_name, score)
            bar.set_postfix({"loss": f"{losses[-1]:.4f}", config.metric_name: f"{score:.4f}"}, refresh=False)
            if config.stop_on_plateau and config.plateau.reached(selection.curve):
                break
        bar.update(1)
    bar.close()
    return selection, losses, step_seconds
