"""Scores of a transfer model: Dice per structure (segmentation) and ROC AUC (classification).

Segmentation is scored by the mean Dice over foreground classes, classification by the ROC AUC
(paper Sec. 4). Where the paper is silent: whole-volume inference uses MONAI's sliding window with
the training crop as window and Gaussian blending of the softmax (nnU-Net); the authors sum softmax
outputs of half-overlapping windows.

The network runs at the run's precision (:func:`gvsl.runtime.autocast`); everything after it, the
softmax or sigmoid, the sliding window's Gaussian blending, Dice and AUC, runs in fp32 outside the
autocast region (the softmax through :func:`gvsl.runtime.full_precision`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, ROCAUCMetric
from monai.metrics.utils import do_metric_reduction
from monai.networks.utils import one_hot
from torch import nn

from gvsl.errors import GVSLInputError
from gvsl.runtime import autocast, full_precision
from gvsl.transfer.cases import Case, _center_crop, _prepare, _Prepared
from gvsl.transfer.config import TransferConfig
from gvsl.transfer.model import TransferModel

__all__ = [
    "classification_probabilities",
    "evaluate",
    "evaluate_cases",
    "evaluate_classification",
    "evaluate_segmentation",
    "segmentation_case_scores",
    "validate",
]


#: Samples per forward pass at evaluation (sliding windows, or whole cases of one shape). On the CPU,
#: PyTorch runs a batch-1 convolution whose N·C·D·H is at most 20480 (every layer of the default
#: profile's networks) on its slow native kernel instead of oneDNN: a batch-1 forward pass of the
#: default U-Net on a 32³ volume took 116 ms here, against 24 ms per sample at batch 4, at one thread
#: (``benchmarks/bench_inference.py``).
EVAL_BATCH = 4


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _logits(model: nn.Module, images: torch.Tensor, precision: str) -> torch.Tensor:
    """``model(images)`` at ``precision``, as fp32 logits."""
    with autocast(images.device, precision):
        return model(images).float()


@full_precision
def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Evaluation mode without autograd inside the block; the model's training mode is restored after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """A name per class id (background included); the ids themselves by default."""
    names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise GVSLInputError(
            f"class_names: expecting {num_classes} names (background included), got {len(names)}: {names}"
        )
    return names


def evaluate_segmentation(
    model: TransferModel,
    cases: Sequence[Case],
    roi: Sequence[int],
    overlap: float = 0.25,
    class_names: Sequence[str] | None = None,
    sw_batch_size: int = EVAL_BATCH,
    precision: str = "auto",
) -> dict[str, float]:
    """Dice of ``model`` on whole volumes (sliding window), per foreground class and averaged.

    Each volume is segmented with MONAI's ``sliding_window_inference`` (window ``roi``, Gaussian
    blending of the softmax, volumes smaller than the window zero-padded), then argmax. Dice is
    computed per case and class with ``DiceMetric(include_background=False)``.

    Empty-vs-empty: a class absent from both the prediction and the ground truth of a case has no
    defined Dice; it is excluded (NaN) from that case's scores instead of counting as 1 (MONAI with
    ``ignore_empty=False``) or 0 (the authors' ``dice``). A class absent from the truth but
    predicted scores 0. Per-class Dice is the mean over the cases where it is scored (MONAI's
    ``mean_batch`` reduction with its not-NaN counts, as ``DiceMetric(reduction="mean_batch",
    get_not_nans=True)`` aggregates); ``mean_dice`` is the mean of the per-class values over
    classes scored in at least one case (NaN if none is). A class never scored is NaN, not the
    0 that MONAI's ``aggregate()`` reports.

    Args:
        model: a segmentation :class:`TransferModel`.
        cases: subjects with labels.
        roi: sliding-window size (D, H, W).
        overlap: window overlap in [0, 1).
        class_names: a name per class id, background included (``len == num_classes``); by default
            the class ids.
        sw_batch_size: sliding windows per forward pass; volumes no larger than ``roi`` (one window
            each) are stacked this many at a time, consecutive cases of one shape (:data:`EVAL_BATCH`).
        precision: the network's precision (:func:`gvsl.runtime.autocast`); the rest runs in fp32.

    Returns:
        ``{"dice/<name>": float for each foreground class, "mean_dice": float}``.
    """
    _require_task(model, "segmentation")
    names = _class_names(class_names, model.head.out_channels)
    return _dice_summary(segmentation_case_scores(model, cases, roi, overlap, sw_batch_size, precision)[1], names)


def _require_task(model: TransferModel, task: str) -> None:
    if model.task != task:
        raise GVSLInputError(f"evaluate_{task} needs a {task} model, got task {model.task!r}")


def segmentation_case_scores(
    model: TransferModel,
    cases: Sequence[Case],
    roi: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = EVAL_BATCH,
    precision: str = "auto",
) -> tuple[list[str], torch.Tensor]:
    """The case ids and their Dice per foreground class, (cases, classes - 1), NaN where a class is not
    scored (see :func:`evaluate_segmentation`)."""
    _require_task(model, "segmentation")
    num_classes = model.head.out_channels
    prepared = _prepare(cases, "evaluation", model.backbone.in_channels, "segmentation", num_classes)
    if not prepared:
        raise GVSLInputError("evaluate_segmentation: no cases to evaluate")
    device = _model_device(model)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    scores = []

    def stack_size(shape: tuple[int, ...]) -> int:
        # Only volumes of one window are stacked: a larger one already fills the passes with its own
        # windows, and stacking it would only multiply the stitched outputs held in memory.
        return sw_batch_size if all(s <= r for s, r in zip(shape[1:], roi)) else 1

    with _inference(model):
        for batch in _same_shape_batches(prepared, lambda case: case.image, stack_size):
            # only the network runs under autocast, not the window's blending
            probabilities = sliding_window_inference(
                torch.stack([case.image for case in batch]).to(device),
                roi_size=tuple(roi),
                sw_batch_size=sw_batch_size,
                predictor=lambda x: _softmax(_logits(model, x, precision)),
                overlap=overlap,
                mode="gaussian",
            )
            prediction = one_hot(probabilities.argmax(dim=1, keepdim=True).cpu(), num_classes)
            truth = one_hot(torch.stack([case.label for case in batch])[:, None], num_classes)
            dice = metric(y_pred=prediction, y=truth)
            both_empty = (prediction[:, 1:].sum(dim=(2, 3, 4)) == 0) & (truth[:, 1:].sum(dim=(2, 3, 4)) == 0)
            scores.append(torch.where(both_empty, torch.nan, dice))
    return [case.id for case in prepared], torch.cat(scores)


def _same_shape_batches(
    cases: Sequence[_Prepared], image: Callable[[_Prepared], torch.Tensor], size: Callable[[tuple[int, ...]], int]
) -> Iterator[list[_Prepared]]:
    """Runs of consecutive cases whose ``image(case)`` shares one shape, at most ``size(shape)`` per run, in order.

    Evaluating whole cases one at a time would put every forward pass on the batch-1 path (see
    :data:`EVAL_BATCH`); cases of one shape are stacked instead, which changes no score beyond float
    rounding (GroupNorm and ``eval()`` keep each sample's output independent of its batch mates).
    """
    for shape, group in itertools.groupby(cases, key=lambda case: tuple(image(case).shape)):
        run, step = list(group), max(1, size(shape))
        for start in range(0, len(run), step):
            yield run[start : start + step]


def _dice_summary(scores: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    # a copy: do_metric_reduction writes 0 over the NaNs of its input, and callers keep the per-case scores
    per_class, scored = do_metric_reduction(scores.clone(), "mean_batch")
    # do_metric_reduction reports 0 for a class scored in no case; it has no Dice at all.
    per_class = torch.where(scored > 0, per_class, torch.nan)
    result = {f"dice/{names[c + 1]}": float(per_class[c]) for c in range(len(names) - 1)}
    result["mean_dice"] = float(per_class[scored > 0].mean()) if bool((scored > 0).any()) else math.nan
    return result


def evaluate_classification(
    model: TransferModel, cases: Sequence[Case], crop: Sequence[int] | None = None, precision: str = "auto"
) -> dict[str, float]:
    """ROC AUC of ``model``'s sigmoid probability over ``cases`` (MONAI ``ROCAUCMetric``).

    Each case is fed whole, except that axes longer than ``crop`` are centre-cropped to it (the
    size the head was trained on; a pooled global feature of a much larger input would drift
    from what the head saw).

    Raises:
        GVSLInputError: the cases hold one target only (AUC undefined).
    """
    _ids, probabilities, targets = classification_probabilities(model, cases, crop, precision)
    return {"auc": _auc(probabilities, targets)}


def classification_probabilities(
    model: TransferModel, cases: Sequence[Case], crop: Sequence[int] | None = None, precision: str = "auto"
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The case ids, ``model``'s sigmoid probability of each and their targets (see :func:`evaluate_classification`)."""
    _require_task(model, "classification")
    prepared = _prepare(cases, "evaluation", model.backbone.in_channels, "classification", 1)
    targets = sorted({c.target for c in prepared})
    if targets != [0, 1]:
        raise GVSLInputError(
            f"ROC AUC is undefined unless both targets 0 and 1 occur; the {len(prepared)} case(s) hold only {targets}"
        )
    device = _model_device(model)

    def model_input(case: _Prepared) -> torch.Tensor:
        return case.image if crop is None else _center_crop(case.image, crop)

    probabilities = []
    with _inference(model):
        for batch in _same_shape_batches(prepared, model_input, lambda shape: EVAL_BATCH):
            logits = _logits(model, torch.stack([model_input(case) for case in batch]).to(device), precision)
            probabilities.append(torch.sigmoid(logits).reshape(len(batch)).cpu())
    return [c.id for c in prepared], torch.cat(probabilities), torch.tensor([c.target for c in prepared])


def _auc(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    metric = ROCAUCMetric()
    metric(probabilities, targets)
    return float(metric.aggregate())


def evaluate_cases(
    model: TransferModel, cases: Sequence[Case], config: TransferConfig, class_names: Sequence[str] | None = None
) -> tuple[dict[str, float], dict[str, list]]:
    """The metrics of ``config.task`` (:func:`evaluate_segmentation` with the training crop as window, or
    :func:`evaluate_classification` with inputs centre-cropped to it), and the per-case scores they come
    from: ``{"ids", "dice": (cases, classes - 1), NaN = not scored}`` or ``{"ids", "probability", "target"}``
    (the paired intervals of Table 1 resample them)."""
    if config.task == "segmentation":
        names = _class_names(class_names, model.head.out_channels)
        ids, scores = segmentation_case_scores(model, cases, config.crop, config.sw_overlap, precision=config.precision)
        return _dice_summary(scores, names), {"ids": ids, "dice": scores.tolist()}
    ids, probabilities, targets = classification_probabilities(model, cases, config.crop, config.precision)
    return {"auc": _auc(probabilities, targets)}, {
        "ids": ids,
        "probability": probabilities.tolist(),
        "target": targets.tolist(),
    }


def evaluate(
    model: TransferModel, cases: Sequence[Case], config: TransferConfig, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """The metrics of :func:`evaluate_cases` alone."""
    return evaluate_cases(model, cases, config, class_names)[0]


def validate(model: TransferModel, cases: Sequence[Case], config: TransferConfig) -> float:
    """The validation score that selects the best iteration: mean Dice or AUC (higher is better)."""
    return evaluate(model, cases, config)[config.metric_name]
