"""Settings of a transfer run, the rule that says when it has converged, and the rule that sizes the task head."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.runtime import check_precision
from gvsl.settings import from_mapping
from gvsl.table1 import PROTOCOLS

__all__ = ["CLASS_WEIGHTINGS", "METRIC_NAMES", "SEG_LOSSES", "PlateauRule", "TransferConfig", "num_outputs"]

CLASS_WEIGHTINGS = ("inverse", "sqrt_inverse", "none")
SEG_LOSSES = ("dice", "ce", "dice_ce")

#: Validation metric of each task type a transfer trains (the key of the evaluation dict that selects the best model).
METRIC_NAMES = {"segmentation": "mean_dice", "classification": "auc"}


@dataclass(frozen=True)
class PlateauRule:
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

    window: float = 0.25
    min_delta: float = 0.01
    min_iterations: int = 0
    min_validations: int = 3
    needs_rise: bool = True

    def __post_init__(self):
        if not 0 < self.window < 1:
            raise GVSLInputError(f"plateau_window must lie in (0, 1), got {self.window}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise GVSLInputError(f"plateau_delta must be a number >= 0, got {self.min_delta}")
        if int(self.min_iterations) < 0:
            raise GVSLInputError(f"min_iterations must be >= 0, got {self.min_iterations}")
        if int(self.min_validations) < 1:
            raise GVSLInputError(f"min_validations must be >= 1, got {self.min_validations}")

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


@dataclass
class TransferConfig:
    """Settings of one transfer run (``params.yaml`` → ``transfer`` group).

    Args:
        task: ``segmentation`` or ``classification``.
        protocol: ``linear`` (frozen backbone) or ``finetune`` (all parameters trained).
        num_classes: segmentation: classes including background (≥ 2); classification: 1 (binary).
        iterations: optimisation steps (paper 4×10⁴).
        val_every: validate every this many iterations, and after the last (paper 200).
        batch_size: crops per step (paper 1).
        lr: Adam learning rate (paper 1e-4).
        crop: training crop (D, H, W) in voxels; also the sliding-window size at inference and the
            centre crop of classification inputs.
        seed: seeds the head's initialisation and the crop sampling.
        class_weighting: weights of the segmentation cross-entropy from the class frequencies over
            the training labels: ``inverse``, ``sqrt_inverse`` (its square root) or ``none`` (see
            :mod:`gvsl.transfer.objectives`); no effect with ``seg_loss="dice"``.
        seg_loss: ``dice`` (authors), ``ce`` or ``dice_ce``.
        sw_overlap: overlap of sliding windows, fraction of the window in [0, 1).
        stop_on_plateau: end the run once its validation curve plateaus (:class:`PlateauRule` of
            ``plateau_window``, ``plateau_delta`` and ``min_iterations``); ``iterations`` is then a cap.
            Either way the run reports whether its curve plateaued.
        plateau_window, plateau_delta, min_iterations, plateau_needs_rise: the :class:`PlateauRule`.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``
            (:func:`gvsl.runtime.autocast`), in training and evaluation; losses and metrics stay fp32.
    """

    task: str
    protocol: str
    num_classes: int
    iterations: int = 40_000
    val_every: int = 200
    batch_size: int = 1
    lr: float = 1e-4
    crop: tuple[int, int, int] = (96, 96, 96)
    seed: int = 0
    class_weighting: str = "inverse"
    seg_loss: str = "dice_ce"
    sw_overlap: float = 0.25
    stop_on_plateau: bool = False
    plateau_window: float = 0.25
    plateau_delta: float = 0.01
    min_iterations: int = 0
    plateau_needs_rise: bool = True
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self):
        if self.task not in METRIC_NAMES:
            raise GVSLInputError(f"task: unknown {self.task!r}; valid: {list(METRIC_NAMES)}")
        if self.protocol not in PROTOCOLS:
            raise GVSLInputError(f"protocol: unknown {self.protocol!r}; valid: {list(PROTOCOLS)}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise GVSLInputError(f"class_weighting: unknown {self.class_weighting!r}; valid: {list(CLASS_WEIGHTINGS)}")
        if self.seg_loss not in SEG_LOSSES:
            raise GVSLInputError(f"seg_loss: unknown {self.seg_loss!r}; valid: {list(SEG_LOSSES)}")
        check_precision(self.precision)
        if self.task == "segmentation" and int(self.num_classes) < 2:
            raise GVSLInputError(
                f"num_classes: segmentation needs >= 2 classes (background included), got {self.num_classes}"
            )
        if self.task == "classification" and int(self.num_classes) != 1:
            raise GVSLInputError(f"num_classes: binary classification uses 1 output, got {self.num_classes}")
        for name in ("iterations", "val_every", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise GVSLInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.crop = tuple(int(c) for c in self.crop)
        if len(self.crop) != 3 or min(self.crop) < 1:
            raise GVSLInputError(f"crop: expecting three positive sizes (D H W), got {self.crop}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GVSLInputError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.sw_overlap < 1:
            raise GVSLInputError(f"sw_overlap must lie in [0, 1), got {self.sw_overlap}")
        _ = self.plateau  # building the rule checks its settings
        if self.min_iterations > self.iterations:
            raise GVSLInputError(
                f"min_iterations ({self.min_iterations}) exceeds iterations ({self.iterations}): "
                "no run could ever plateau"
            )
        if self.stop_on_plateau and not self.plateau.can_fire(self.iterations, self.val_every):
            raise GVSLInputError(
                f"the plateau rule cannot fire within {self.iterations} iterations validated every {self.val_every}: "
                f"it needs {2 if self.plateau_needs_rise else 1} validation(s) before its last "
                f"max({self.plateau_window:g} of the iterations, 3 validations); validate more often or run longer"
            )

    @property
    def plateau(self) -> PlateauRule:
        """The rule that says whether a validation curve has plateaued."""
        return PlateauRule(
            self.plateau_window, self.plateau_delta, self.min_iterations, needs_rise=bool(self.plateau_needs_rise)
        )

    @property
    def metric_name(self) -> str:
        """Key of the validation metric: ``mean_dice`` or ``auc``."""
        return METRIC_NAMES[self.task]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransferConfig:
        return from_mapping(cls, values, "transfer")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d
