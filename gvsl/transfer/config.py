"""Settings of a transfer run, the rule that says when it has converged, and the rule that sizes the task head."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from gvsl.errors import GVSLInputError
from gvsl.runtime import PRECISIONS
from gvsl.settings import Bounds, Checked, OneOf, from_mapping, to_mapping
from gvsl.table1 import PROTOCOLS

__all__ = [
    "CLASS_WEIGHTINGS",
    "METRIC_NAMES",
    "SEG_LOSSES",
    "STEPS",
    "LabelFraction",
    "PlateauRule",
    "TransferConfig",
    "TransferSchedule",
    "num_outputs",
]

CLASS_WEIGHTINGS = ("inverse", "sqrt_inverse", "none")
SEG_LOSSES = ("dice", "ce", "dice_ce")

#: the bounds of a step count (a run's iterations, its validation interval)
STEPS = Bounds(1, integer=True)
Fraction = Annotated[float, Bounds(0.0, 1.0, open_low=True, open_high=True)]
NonNegativeScore = Annotated[float, Bounds(0.0, math.inf, open_high=True, words="a number >= 0")]
NonNegativeCount = Annotated[int, Bounds(0, integer=True)]
#: a fraction of the labelled training cases
LabelFraction = Annotated[float, Bounds(0.0, 1.0, open_low=True, words="a fraction in (0, 1]")]

#: Validation metric of each task type a transfer trains (the key of the evaluation dict that selects the best model).
METRIC_NAMES = {"segmentation": "mean_dice", "classification": "auc"}


@dataclass(frozen=True)
class PlateauRule(Checked):
    """A validation curve has plateaued when its last ``window`` of iterations added less than ``min_delta``.

    At a validation at iteration ``i >= min_iterations``, the *recent* validations are those after
    ``(1 - window) · i``, and at least the last ``min_validations`` of them (so that one noisy score
    never decides). The curve has plateaued when its best score exceeds the best score before the
    recent validations by less than ``min_delta`` (scores are fractions: 0.01 is one point of Dice or
    AUC), and, with ``needs_rise``, it has risen by at least ``min_delta`` above its first score at some
    point: a fine-tuned network can sit at 0 Dice for tens of steps before it takes off, and a curve
    flat from the start has not begun to learn. A linear probe on frozen features is a convex problem
    with no such delay; its validation score can peak at the first validation, and such a curve is as
    converged as any, so the linear protocol goes without the rise. NaN scores count as no score; a
    NaN last score is no plateau.

    The default profile's transfer runs stop at the first validation where this holds, and a Table 1
    cell is *converged* when all its runs plateaued. The rule and its settings were set from scratch's
    validation curves and the time budget; no test number informs them.
    """

    window: Fraction = 0.25
    min_delta: NonNegativeScore = 0.01
    min_iterations: NonNegativeCount = 0
    min_validations: Annotated[int, Bounds(1, integer=True)] = 3
    needs_rise: bool = True

    def reached(self, curve: Sequence[tuple[int, float]]) -> bool:
        """Whether ``curve`` (``(iteration, score)`` in order) has plateaued at its last validation."""
        if not curve or curve[-1][0] < self.min_iterations or math.isnan(curve[-1][1]):
            return False
        horizon = (1 - self.window) * curve[-1][0]
        recent = max(sum(iteration > horizon for iteration, _ in curve), self.min_validations)
        earlier = [score for _, score in curve[:-recent] if not math.isnan(score)]
        scores = [score for _, score in curve if not math.isnan(score)]
        if not earlier or (self.needs_rise and max(scores) - scores[0] < self.min_delta):
            return False
        return max(scores) - max(earlier) < self.min_delta

    def can_fire(self, cap: int, val_every: int) -> bool:
        """Whether some validation curve reaches this rule by iteration ``cap``, validated every ``val_every``.

        The rule compares the recent validations with the earlier ones, so at least one validation must
        lie before the recent window; with ``needs_rise`` two, since a curve whose only earlier score is
        its first would need to have risen above it (the rise) and not above it (the plateau) at once.
        The earlier validations only grow in number with the iteration, so the cap is the best chance the rule gets.
        """
        if cap < self.min_iterations:
            return False
        validated = [*range(val_every, cap, val_every), cap]  # as the training loop validates
        horizon = (1 - self.window) * cap
        recent = max(sum(iteration > horizon for iteration in validated), self.min_validations)
        return len(validated) - recent >= (2 if self.needs_rise else 1)


def num_outputs(task_type: str, classes: Sequence[str]) -> int:
    """Outputs of the task head for a dataset: its foreground ``classes`` plus background (segmentation), or 1.

    ``classes`` are a prepared dataset's class names (``DatasetInfo.classes``, background excluded);
    classification is binary, one logit.
    """
    return len(classes) + 1 if task_type == "segmentation" else 1


@dataclass(kw_only=True)
class TransferSchedule(Checked):
    """How every transfer run trains and when it stops: the settings that one run (:class:`TransferConfig`)
    and the pipeline's ``transfer.<protocol>`` groups (:class:`gvsl.pipeline.config.ProtocolSettings`)
    share. The defaults are the paper's.

    Args:
        iterations: optimisation steps (paper 4×10⁴).
        val_every: validate every this many iterations, and after the last (paper 200).
        batch_size: crops per step (paper 1).
        lr: Adam learning rate (paper 1e-4).
        class_weighting: weights of the segmentation cross-entropy from the class frequencies over
            the training labels: ``inverse``, ``sqrt_inverse`` (its square root) or ``none`` (see
            :mod:`gvsl.transfer.objectives`); no effect with ``seg_loss="dice"``.
        seg_loss: ``dice`` (authors), ``ce`` or ``dice_ce``.
        sw_overlap: overlap of sliding windows, fraction of the window in [0, 1).
        stop_on_plateau: end the run once its validation curve plateaus (:class:`PlateauRule` of
            ``plateau_window``, ``plateau_delta`` and ``min_iterations``); ``iterations`` is then a cap.
            Either way the run reports whether its curve plateaued.
        plateau_window: the recent fraction of the iterations that must add less than ``plateau_delta``.
        plateau_delta: in score units (0.01 = one point of Dice or AUC).
        min_iterations: the plateau rule applies from this iteration on.
        plateau_needs_rise: a curve must have risen above its first validation to plateau (fine-tuning);
            without it, a curve whose first validation is its best may plateau (linear probes).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``
            (:func:`gvsl.runtime.autocast`), in training and evaluation; losses and metrics stay fp32.
    """

    iterations: Annotated[int, STEPS] = 40_000
    val_every: Annotated[int, STEPS] = 200
    batch_size: Annotated[int, Bounds(1, integer=True)] = 1
    lr: Annotated[float, Bounds(0.0, math.inf, open_low=True, open_high=True, words="a positive number")] = 1e-4
    class_weighting: Annotated[str, OneOf(CLASS_WEIGHTINGS)] = "inverse"
    seg_loss: Annotated[str, OneOf(SEG_LOSSES)] = "dice_ce"
    sw_overlap: Annotated[float, Bounds(0.0, 1.0, open_high=True)] = 0.25
    stop_on_plateau: bool = False
    plateau_window: Fraction = 0.25
    plateau_delta: NonNegativeScore = 0.01
    min_iterations: NonNegativeCount = 0
    plateau_needs_rise: bool = True
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"

    def __post_init__(self):
        super().__post_init__()
        caps = self.iterations.values() if isinstance(self.iterations, Mapping) else [self.iterations]
        for cap in caps:
            if self.min_iterations > cap:
                raise GVSLInputError(
                    f"min_iterations ({self.min_iterations}) exceeds iterations ({cap}): no run could ever plateau"
                )
            if self.stop_on_plateau and not self.plateau.can_fire(cap, self.val_every):
                raise GVSLInputError(
                    f"the plateau rule cannot fire within {cap} iterations validated every {self.val_every}: "
                    f"it needs {2 if self.plateau_needs_rise else 1} validation(s) before its last "
                    f"max({self.plateau_window:g} of the iterations, 3 validations); validate more often or run longer"
                )

    @property
    def plateau(self) -> PlateauRule:
        """The rule that says whether a validation curve has plateaued."""
        return PlateauRule(
            self.plateau_window, self.plateau_delta, self.min_iterations, needs_rise=self.plateau_needs_rise
        )


@dataclass
class TransferConfig(TransferSchedule):
    """Settings of one transfer run: the schedule, and which task and protocol, on which crops, from which
    seed on which device.

    Args:
        task: ``segmentation`` or ``classification``.
        protocol: ``linear`` (frozen backbone) or ``finetune`` (all parameters trained).
        num_classes: segmentation: classes including background (≥ 2); classification: 1 (binary).
        crop: training crop (D, H, W) in voxels; also the sliding-window size at inference and the
            centre crop of classification inputs.
        seed: seeds the head's initialisation, the crop sampling and which labelled cases ``label_fraction``
            keeps.
        label_fraction: the fraction of the labelled training cases the run trains on (nested and seeded:
            :func:`gvsl.transfer.cases.label_subset`); validation and test cases are every case.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
    """

    task: Annotated[str, OneOf(tuple(METRIC_NAMES))]
    protocol: Annotated[str, OneOf(PROTOCOLS)]
    num_classes: int
    crop: Annotated[tuple[int, int, int], Bounds(1, integer=True)] = (96, 96, 96)
    seed: Annotated[int, Bounds(0, integer=True)] = 0
    label_fraction: LabelFraction = 1.0
    device: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.task == "segmentation" and self.num_classes < 2:
            raise GVSLInputError(
                f"num_classes: segmentation needs >= 2 classes (background included), got {self.num_classes}"
            )
        if self.task == "classification" and self.num_classes != 1:
            raise GVSLInputError(f"num_classes: binary classification uses 1 output, got {self.num_classes}")

    @property
    def metric_name(self) -> str:
        """Key of the validation metric: ``mean_dice`` or ``auc``."""
        return METRIC_NAMES[self.task]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransferConfig:
        return from_mapping(cls, values, "transfer")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)
