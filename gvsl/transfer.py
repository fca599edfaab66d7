"""Transfer protocols of the paper: a pretrained backbone plus one-layer head, trained on a downstream task.

He et al., CVPR 2023, Sec. 4 (paraphrased): *linear* freezes the backbone and trains one layer only
(segmentation: a convolution + softmax on the local feature f^l; classification: a linear layer +
sigmoid on the pooled global feature f^g); *fine-tune* trains the same heads and all backbone
parameters. Batch 1, Adam 1e-4, 4×10⁴ iterations, validation every 200 iterations, the model best
on validation is tested. Segmentation is scored by the mean Dice over foreground classes,
classification by the ROC AUC.

Choices made here where the paper is silent (the authors' downstream code exists for SHC only):

- The segmentation head is a 3×3×3 convolution, as in the authors' ``UNet3D_GVSL.out_conv``.
- The segmentation loss is configurable (``TransferConfig.seg_loss``): ``dice`` is the authors'
  soft Dice (softmax, squared denominators, smoothing 1, background included); the default
  ``dice_ce`` adds cross-entropy, weighted by inverse class frequency when ``class_weighted``
  (SPEC, measured facts: without weighting a linear probe on small cohorts predicts background
  only and every structure scores 0).
- Training crops: a case is drawn uniformly; with probability 1/2 the crop is centred on a voxel of
  a foreground class present in the case (class drawn uniformly, then voxel uniformly, as nnU-Net's
  foreground oversampling does), otherwise it is placed uniformly. A crop larger than a training
  volume is an error, never padded silently.
- Whole-volume inference uses MONAI's sliding window with the training crop as window and Gaussian
  blending of the softmax (nnU-Net); the authors sum softmax outputs of half-overlapping windows.
- Ties between validation scores keep the earliest iteration (the authors keep the latest).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import DiceMetric, ROCAUCMetric
from monai.metrics.utils import do_metric_reduction
from monai.networks.utils import one_hot
from torch import nn
from tqdm.auto import tqdm

from gvsl.errors import GVSLInputError
from gvsl.nets.unet import PAPER_CHANNELS, UNet3D
from gvsl.runtime import resolve_device
from gvsl.settings import from_mapping

__all__ = [
    "PROTOCOLS",
    "SEG_LOSSES",
    "TASKS",
    "Case",
    "NonFiniteLossError",
    "TransferConfig",
    "TransferModel",
    "TransferResult",
    "build_transfer_model",
    "evaluate_classification",
    "evaluate_segmentation",
    "extract_local_features",
    "run_transfer",
    "validate",
]

TASKS = ("segmentation", "classification")
PROTOCOLS = ("linear", "finetune")
SEG_LOSSES = ("dice", "ce", "dice_ce")

#: Probability that a segmentation training crop is centred on a foreground voxel.
FOREGROUND_PROBABILITY = 0.5

#: Validation metric of each task (the key of the evaluation dict that selects the best model).
METRIC_NAMES = {"segmentation": "mean_dice", "classification": "auc"}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""


@dataclass
class Case:
    """One subject, held in memory.

    Attributes:
        id: subject name, used in error messages.
        image: float32 (C, D, H, W) or (D, H, W), intensities already normalised.
        label: uint8 (D, H, W) class ids (segmentation), or ``None``.
        target: 0 or 1 (binary classification), or ``None``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None = None
    target: int | None = None


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
        class_weighted: weight the segmentation cross-entropy by inverse class frequency over the
            training labels (needed at CPU scale, see the module docstring); no effect with
            ``seg_loss="dice"``.
        seg_loss: ``dice`` (authors), ``ce`` or ``dice_ce``.
        sw_overlap: overlap of sliding windows, fraction of the window in [0, 1).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
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
    class_weighted: bool = True
    seg_loss: str = "dice_ce"
    sw_overlap: float = 0.25
    device: str = "auto"

    def __post_init__(self):
        if self.task not in TASKS:
            raise GVSLInputError(f"task: unknown {self.task!r}; valid: {list(TASKS)}")
        if self.protocol not in PROTOCOLS:
            raise GVSLInputError(f"protocol: unknown {self.protocol!r}; valid: {list(PROTOCOLS)}")
        if self.seg_loss not in SEG_LOSSES:
            raise GVSLInputError(f"seg_loss: unknown {self.seg_loss!r}; valid: {list(SEG_LOSSES)}")
        if self.task == "segmentation" and int(self.num_classes) < 2:
            raise GVSLInputError(f"num_classes: segmentation needs >= 2 classes (background included), "
                                 f"got {self.num_classes}")
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

    @property
    def metric_name(self) -> str:
        """Key of the validation metric: ``mean_dice`` or ``auc``."""
        return METRIC_NAMES[self.task]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TransferConfig":
        return from_mapping(cls, values, "transfer")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d


class TransferModel(nn.Module):
    """A GVSL backbone with a one-layer task head; ``forward`` returns logits.

    Args:
        backbone: the (pretrained) U-Net; this module owns it (pass a copy to keep the original).
        task: ``segmentation`` or ``classification``.
        num_classes: segmentation classes including background, or 1 for binary classification.
        frozen: linear protocol: the backbone's parameters get no gradient, the backbone stays in
            ``eval()`` mode whatever ``train()`` is called with, and its forward pass runs without
            autograd (faster, and guarantees its weights are left bit-identical).
        cache_features: frozen only: remember the backbone's output per distinct input (keyed by a
            digest of its bytes). A frozen backbone is a fixed function, so this changes no number;
            it pays off when the same inputs recur — whole-volume crops, where a linear probe sees
            each case again every epoch — and must stay off when inputs never repeat (random crops
            of larger volumes), where it would only grow.

    Heads (paper Sec. 4.1): segmentation, a 3×3×3 convolution f^l → class logits (softmax in the
    loss and at inference); classification, global average pooling of f^g and a linear layer → one
    logit (sigmoid in the loss and at inference).

    ``forward(x)``: x (B, C, D, H, W) → segmentation logits (B, num_classes, D, H, W) or
    classification logits (B, 1).
    """

    def __init__(self, backbone: UNet3D, task: str, num_classes: int, frozen: bool, cache_features: bool = False):
        super().__init__()
        if cache_features and not frozen:
            raise GVSLInputError("cache_features needs a frozen backbone (linear protocol)")
        self.cache_features = cache_features
        self._features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if task not in TASKS:
            raise GVSLInputError(f"task: unknown {task!r}; valid: {list(TASKS)}")
        self.backbone = backbone
        self.task = task
        self.frozen = frozen
        if task == "segmentation":
            self.head: nn.Module = nn.Conv3d(backbone.local_channels, num_classes, kernel_size=3, padding=1)
        else:
            self.head = nn.Linear(backbone.global_channels, num_classes)
        self.backbone.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def _backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cache_features:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                return self.backbone(x)
        # Per sample, so a batch of already-seen cases in a new combination is a hit (GroupNorm and
        # eval mode make each sample's features independent of its batch mates).
        keys = [(tuple(sample.shape), sample.dtype, sample.device,
                 hashlib.blake2b(sample.detach().cpu().numpy().tobytes()).digest()) for sample in x]
        missing = {key: index for index, key in enumerate(keys) if key not in self._features}
        if missing:
            with torch.no_grad():
                global_f, local_f = self.backbone(x[list(missing.values())])
            for row, key in enumerate(missing):
                self._features[key] = (global_f[row].detach(), local_f[row].detach())
        return tuple(torch.stack([self._features[key][part] for key in keys]) for part in (0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_feature, local_feature = self._backbone_features(x)
        if self.task == "segmentation":
            return self.head(local_feature)
        return self.head(global_feature.mean(dim=(2, 3, 4)))


def build_transfer_model(backbone: UNet3D, config: TransferConfig, cache_features: bool = False) -> TransferModel:
    """A :class:`TransferModel` over a deep copy of ``backbone`` (the caller's module is never changed).

    The head is initialised from ``config.seed`` without touching the global RNG stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TransferModel(copy.deepcopy(backbone), config.task, config.num_classes,
                             frozen=config.protocol == "linear", cache_features=cache_features)


# ----------------------------------------------------------------------------------------------
# Cases: checks and conversion to tensors


@dataclass
class _Prepared:
    """A checked case: image (C, D, H, W) float32, label (D, H, W) int64 or None."""

    id: str
    image: torch.Tensor
    label: torch.Tensor | None
    target: int | None


def _prepare(cases: Sequence[Case], split: str, in_channels: int, task: str, num_classes: int) -> list[_Prepared]:
    """Check ``cases`` for ``task`` and convert them to tensors; errors name the split and the case."""
    out = []
    for case in cases:
        where = f"{split} case {case.id!r}"
        image = torch.as_tensor(np.asarray(case.image, dtype=np.float32))
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4:
            raise GVSLInputError(f"{where}: expecting an image (D, H, W) or (C, D, H, W), got shape {tuple(image.shape)}")
        if image.shape[0] != in_channels:
            raise GVSLInputError(f"{where}: the backbone expects {in_channels} channel(s), the image has {image.shape[0]}")
        if not torch.isfinite(image).all():
            raise GVSLInputError(f"{where}: image holds NaN or Inf voxels")
        label, target = None, None
        if task == "segmentation":
            if case.label is None:
                raise GVSLInputError(f"{where}: segmentation needs a label volume, got None")
            label_array = np.asarray(case.label)
            if label_array.shape != tuple(image.shape[1:]):
                raise GVSLInputError(f"{where}: label shape {label_array.shape} differs from image shape "
                                     f"{tuple(image.shape[1:])}")
            if not np.issubdtype(label_array.dtype, np.integer):
                raise GVSLInputError(f"{where}: label must hold integer class ids, got dtype {label_array.dtype}")
            values = np.unique(label_array)
            bad = values[(values < 0) | (values >= num_classes)]
            if bad.size:
                raise GVSLInputError(f"{where}: label values {bad.tolist()} outside 0..{num_classes - 1} "
                                     f"(num_classes={num_classes})")
            label = torch.as_tensor(label_array.astype(np.int64))
        else:
            if case.target not in (0, 1) or isinstance(case.target, str):
                raise GVSLInputError(f"{where}: classification needs a target of 0 or 1, got {case.target!r}")
            target = int(case.target)
        out.append(_Prepared(str(case.id), image.contiguous(), label, target))
    return out


def _center_crop(image: torch.Tensor, crop: Sequence[int]) -> torch.Tensor:
    """Centre crop of the last three axes to at most ``crop`` (axes already smaller are kept whole)."""
    starts = [max(s - c, 0) // 2 for s, c in zip(image.shape[-3:], crop)]
    ends = [st + min(s, c) for st, s, c in zip(starts, image.shape[-3:], crop)]
    return image[..., starts[0]:ends[0], starts[1]:ends[1], starts[2]:ends[2]]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device):
    # bf16 on CUDA for speed (as pre-training); exact fp32 on the CPU, where runs must be bit-reproducible.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# Evaluation


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """A name per class id (background included); the ids themselves by default."""
    names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise GVSLInputError(f"class_names: expecting {num_classes} names (background included), got {len(names)}: {names}")
    return names


def evaluate_segmentation(model: TransferModel, cases: Sequence[Case], roi: Sequence[int], overlap: float = 0.25,
                          class_names: Sequence[str] | None = None, sw_batch_size: int = 1) -> dict[str, float]:
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
        sw_batch_size: windows per forward pass.

    Returns:
        ``{"dice/<name>": float for each foreground class, "mean_dice": float}``.
    """
    if model.task != "segmentation":
        raise GVSLInputError(f"evaluate_segmentation needs a segmentation model, got task {model.task!r}")
    num_classes = model.head.out_channels
    names = _class_names(class_names, num_classes)
    prepared = _prepare(cases, "evaluation", model.backbone.in_channels, "segmentation", num_classes)
    if not prepared:
        raise GVSLInputError("evaluate_segmentation: no cases to evaluate")
    device = _model_device(model)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    scores = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for case in prepared:
                with _autocast(device):
                    probabilities = sliding_window_inference(
                        case.image[None].to(device), roi_size=tuple(roi), sw_batch_size=sw_batch_size,
                        predictor=lambda x: torch.softmax(model(x).float(), dim=1), overlap=overlap, mode="gaussian")
                prediction = one_hot(probabilities.argmax(dim=1, keepdim=True).cpu(), num_classes)
                truth = one_hot(case.label[None, None], num_classes)
                dice = metric(y_pred=prediction, y=truth)
                both_empty = (prediction[:, 1:].sum(dim=(2, 3, 4)) == 0) & (truth[:, 1:].sum(dim=(2, 3, 4)) == 0)
                scores.append(torch.where(both_empty, torch.nan, dice))
    finally:
        model.train(was_training)
    per_class, scored = do_metric_reduction(torch.cat(scores), "mean_batch")
    # do_metric_reduction reports 0 for a class scored in no case; it has no Dice at all.
    per_class = torch.where(scored > 0, per_class, torch.nan)
    result = {f"dice/{names[c + 1]}": float(per_class[c]) for c in range(num_classes - 1)}
    result["mean_dice"] = float(per_class[scored > 0].mean()) if bool((scored > 0).any()) else math.nan
    return result


def evaluate_classification(model: TransferModel, cases: Sequence[Case],
                            crop: Sequence[int] | None = None) -> dict[str, float]:
    """ROC AUC of ``model``'s sigmoid probability over ``cases`` (MONAI ``ROCAUCMetric``).

    Each case is fed whole, except that axes longer than ``crop`` are centre-cropped to it (the
    size the head was trained on; a pooled global feature of a much larger input would drift
    from what the head saw).

    Raises:
        GVSLInputError: the cases hold one target only (AUC undefined).
    """
    if model.task != "classification":
        raise GVSLInputError(f"evaluate_classification needs a classification model, got task {model.task!r}")
    prepared = _prepare(cases, "evaluation", model.backbone.in_channels, "classification", 1)
    targets = sorted({c.target for c in prepared})
    if targets != [0, 1]:
        raise GVSLInputError(f"ROC AUC is undefined unless both targets 0 and 1 occur; the {len(prepared)} "
                             f"case(s) hold only {targets}")
    device = _model_device(model)
    probabilities = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for case in prepared:
                image = case.image if crop is None else _center_crop(case.image, crop)
                with _autocast(device):
                    logit = model(image[None].to(device))
                probabilities.append(torch.sigmoid(logit.float()).reshape(1).cpu())
    finally:
        model.train(was_training)
    metric = ROCAUCMetric()
    metric(torch.cat(probabilities), torch.tensor([c.target for c in prepared]))
    return {"auc": float(metric.aggregate())}


def validate(model: TransferModel, cases: Sequence[Case], config: TransferConfig) -> float:
    """The validation score that selects the best iteration: mean Dice or AUC (higher is better)."""
    if config.task == "segmentation":
        return evaluate_segmentation(model, cases, config.crop, config.sw_overlap)["mean_dice"]
    return evaluate_classification(model, cases, config.crop)["auc"]


# ----------------------------------------------------------------------------------------------
# Training


class _CropSampler:
    """Random training crops (see the module docstring), drawn from one seeded generator."""

    def __init__(self, cases: list[_Prepared], config: TransferConfig, generator: torch.Generator):
        self.cases = cases
        self.crop = config.crop
        self.segmentation = config.task == "segmentation"
        self.generator = generator
        for case in cases:
            shape = tuple(case.image.shape[1:])
            if any(c > s for c, s in zip(self.crop, shape)):
                raise GVSLInputError(f"training case {case.id!r}: crop {self.crop} is larger than the volume {shape}; "
                                     "lower 'crop' or resample the data")
        # Foreground classes present in each case (none for classification: crops are uniform).
        self.foreground = [[v for v in torch.unique(c.label).tolist() if v != 0] if self.segmentation else []
                           for c in cases]

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.generator))

    def _start(self, index: int) -> list[int]:
        case, shape = self.cases[index], self.cases[index].image.shape[1:]
        classes = self.foreground[index]
        if classes and float(torch.rand(1, generator=self.generator)) < FOREGROUND_PROBABILITY:
            voxels = torch.nonzero(case.label == classes[self._randint(len(classes))])
            centre = voxels[self._randint(len(voxels))].tolist()
            return [min(max(p - c // 2, 0), s - c) for p, c, s in zip(centre, self.crop, shape)]
        return [self._randint(s - c + 1) for s, c in zip(shape, self.crop)]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, *crop) and segmentation labels (B, *crop) or classification targets (B, 1)."""
        images, labels = [], []
        for _ in range(batch):
            index = self._randint(len(self.cases))
            d, h, w = self._start(index)
            window = (slice(d, d + self.crop[0]), slice(h, h + self.crop[1]), slice(w, w + self.crop[2]))
            case = self.cases[index]
            images.append(case.image[(slice(None), *window)])
            labels.append(case.label[window] if self.segmentation else torch.tensor([float(case.target)]))
        return torch.stack(images), torch.stack(labels)


def _class_weights(cases: list[_Prepared], num_classes: int) -> torch.Tensor:
    """Inverse class frequency over all training voxels, ``total / (num_classes · count_c)``.

    A class absent from every training label gets weight 0 (it cannot be learnt) and a warning.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for case in cases:
        counts += torch.bincount(case.label.flatten(), minlength=num_classes).double()
    absent = [c for c in range(num_classes) if counts[c] == 0]
    if absent:
        warnings.warn(f"classes {absent} occur in no training label; they get weight 0 and cannot be learnt",
                      stacklevel=3)
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights.float()


def _loss_function(config: TransferConfig, train: list[_Prepared],
                   device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, target)``: segmentation (B, K, *crop) vs (B, *crop) ids; classification (B, 1) vs (B, 1)."""
    if config.task == "classification":
        return F.binary_cross_entropy_with_logits
    use_dice, use_ce = config.seg_loss in ("dice", "dice_ce"), config.seg_loss in ("ce", "dice_ce")
    weight = _class_weights(train, config.num_classes).to(device) if config.class_weighted and use_ce else None
    # The authors' dice_coef: softmax, squared terms in the denominator, smoothing 1, mean over
    # samples and classes with the background included.
    soft_dice = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, squared_pred=True,
                         smooth_nr=1.0, smooth_dr=1.0)

    def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        if use_dice:
            total = total + soft_dice(logits, labels[:, None])
        if use_ce:
            total = total + F.cross_entropy(logits, labels, weight=weight)
        return total

    return segmentation_loss


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
    train_loss: list[float] = field(default_factory=list)


def _is_better(score: float, best: float | None) -> bool:
    """Strictly higher wins (ties keep the earlier iteration); any number beats NaN."""
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(score)
    return score > best


def run_transfer(backbone: UNet3D, train: Sequence[Case], val: Sequence[Case], test: Sequence[Case],
                 config: TransferConfig, log_dir: str | Path | None = None, class_names: Sequence[str] | None = None,
                 progress: bool = True) -> TransferResult:
    """Train a head (linear) or the whole network (fine-tune) on ``train``, keep the best on ``val``, score ``test``.

    Validation runs every ``config.val_every`` iterations and after the last; the best state
    (strictly higher score; ties keep the earliest) is deep-copied and loaded back before testing.
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
    in_channels = backbone.in_channels
    train_cases = _prepare(train, "training", in_channels, config.task, config.num_classes)
    for split, cases in (("validation", val), ("test", test)):
        prepared = _prepare(cases, split, in_channels, config.task, config.num_classes)
        if config.task == "classification" and len({c.target for c in prepared}) < 2:
            raise GVSLInputError(f"{split} split: ROC AUC needs both targets 0 and 1, all {len(prepared)} case(s) "
                                 f"have target {prepared[0].target}")
    sampler = _CropSampler(train_cases, config, torch.Generator().manual_seed(config.seed))

    # A linear probe on whole-volume crops sees the same inputs every epoch: cache its frozen features.
    whole_volumes = all(tuple(c.image.shape[1:]) == tuple(config.crop) for c in train_cases) and all(
        tuple(np.shape(c.image)[-3:]) == tuple(config.crop) for c in (*val, *test))
    cache = config.protocol == "linear" and whole_volumes
    model = build_transfer_model(backbone, config, cache_features=cache).to(
        device=device, memory_format=torch.channels_last_3d)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    loss_function = _loss_function(config, train_cases, device)

    live = None
    if log_dir is not None:
        from dvclive import Live

        live = Live(str(log_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        live.log_params({"transfer": config.to_dict()})

    metric_name = config.metric_name
    best_score: float | None = None
    best_iteration = 0
    best_state: dict[str, torch.Tensor] = {}
    val_curve: list[tuple[int, float]] = []
    losses: list[float] = []
    step_seconds = 0.0
    began = time.perf_counter()
    bar = tqdm(total=config.iterations, disable=not progress, desc=f"transfer {config.task} {config.protocol}",
               dynamic_ncols=True)
    model.train()
    for done in range(1, config.iterations + 1):
        step_began = time.perf_counter()
        images, targets = sampler.sample(config.batch_size)
        images = images.to(device, memory_format=torch.channels_last_3d)
        with _autocast(device):
            logits = model(images)
        loss = loss_function(logits.float(), targets.to(device))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss {float(loss)} at iteration {done}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_seconds += time.perf_counter() - step_began
        losses.append(loss.item())
        if live is not None:
            live.step = done
            live.log_metric("train/loss", losses[-1])
        if done % config.val_every == 0 or done == config.iterations:
            score = float(validate(model, val, config))
            val_curve.append((done, score))
            if _is_better(score, best_score):
                best_score, best_iteration = score, done
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if live is not None:
                live.log_metric(f"val/{metric_name}", score)
                live.make_summary()
            bar.set_postfix({"loss": f"{losses[-1]:.4f}", metric_name: f"{score:.4f}"}, refresh=False)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - began

    model.load_state_dict(best_state)
    if config.task == "segmentation":
        test_metrics = evaluate_segmentation(model, test, config.crop, config.sw_overlap, class_names)
    else:
        test_metrics = evaluate_classification(model, test, config.crop)
    if live is not None:
        live.log_metric("best_iteration", best_iteration, plot=False)
        live.log_metric(f"best_val/{metric_name}", best_score, plot=False)
        for name, value in test_metrics.items():
            live.log_metric(f"test/{name}", value, plot=False)
        live.end()
    return TransferResult(best_iteration, best_score, val_curve, test_metrics, model, metric_name, seconds,
                          step_seconds / config.iterations, losses)


# ----------------------------------------------------------------------------------------------
# Features for the t-SNE of paper Fig. 7


def extract_local_features(backbone: UNet3D, cases: Sequence[Case], max_per_class: int = 200, seed: int = 0,
                           device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Local feature vectors f^l sampled per foreground structure, for the t-SNE of paper Fig. 7.

    For every foreground class, ``min(max_per_class, voxels of that class over all cases)`` voxels
    are drawn uniformly without replacement from all cases together (seeded by ``seed``); each
    case then goes once, whole, through a copy of ``backbone`` (in ``eval()`` mode, on ``device``)
    and the drawn voxels' feature vectors are gathered. Background (class 0) is not sampled.

    Returns:
        features: float32 (N, channels[8]); labels: int64 (N,) class ids, grouped by ascending class.

    Raises:
        GVSLInputError: a case without label, or no foreground voxel in any case.
    """
    if max_per_class < 1:
        raise GVSLInputError(f"max_per_class must be >= 1, got {max_per_class}")
    if not cases:
        raise GVSLInputError("extract_local_features: no cases given")
    for case in cases:
        if case.label is None:
            raise GVSLInputError(f"case {case.id!r}: feature sampling needs a label volume, got None")
    # Any class id is accepted here: the label range only bounds the check in _prepare.
    num_classes = max(int(np.max(case.label)) for case in cases) + 1
    prepared = _prepare(cases, "feature", backbone.in_channels, "segmentation", max(num_classes, 2))
    classes = sorted({int(v) for c in prepared for v in torch.unique(c.label).tolist()} - {0})
    if not classes:
        raise GVSLInputError(f"extract_local_features: no foreground voxel in any of the {len(cases)} case(s)")

    generator = torch.Generator().manual_seed(seed)
    picks: list[list[tuple[int, torch.Tensor]]] = [[] for _ in prepared]  # per case: (class, flat voxel indices)
    for cls in classes:
        per_case = [torch.nonzero(c.label.flatten() == cls).flatten() for c in prepared]
        owner = torch.cat([torch.full((len(v),), i) for i, v in enumerate(per_case)])
        voxel = torch.cat(per_case)
        chosen = torch.randperm(len(voxel), generator=generator)[:max_per_class].sort().values
        for i in range(len(prepared)):
            mine = voxel[chosen][owner[chosen] == i]
            if len(mine):
                picks[i].append((cls, mine))

    torch_device = resolve_device(device)
    model = copy.deepcopy(backbone).to(torch_device).eval()
    gathered: dict[int, list[torch.Tensor]] = {cls: [] for cls in classes}
    with torch.no_grad():
        for case, case_picks in zip(prepared, picks):
            if not case_picks:
                continue
            local = model(case.image[None].to(torch_device))[1][0].flatten(1).float().cpu()  # (C, D·H·W)
            for cls, voxels in case_picks:
                gathered[cls].append(local[:, voxels].T)
    features = [torch.cat(gathered[cls]) for cls in classes]
    labels = [torch.full((len(f),), cls, dtype=torch.int64) for cls, f in zip(classes, features)]
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def transfer_prepared(data: str | Path, out: str | Path, init: str, config: TransferConfig,
                      channels: Sequence[int] = PAPER_CHANNELS, progress: bool = True) -> TransferResult:
    """Run one transfer experiment on a prepared dataset and write ``out/metrics.json``, ``out/model.pt``, ``out/dvclive/``.

    Args:
        data: prepared dataset folder (task SHC, SAC, CCC or SBM).
        out: output folder.
        init: ``scratch`` (a fresh U-Net of ``channels``, seeded by ``config.seed``) or a path to
            our ``backbone.pt``, our model checkpoint, or the authors' released weights.
        config: run settings; ``task`` and ``num_classes`` must agree with the dataset.
    """
    from gvsl.checkpoint import atomic_save, load_backbone
    from gvsl.data import load_prepared
    from gvsl.runtime import git_commit

    dataset = load_prepared(data, task=("SHC", "SAC", "CCC", "SBM"))
    info = dataset.info
    num_classes = len(info.classes) + 1 if info.task_type == "segmentation" else 1
    if config.task != info.task_type or config.num_classes != num_classes:
        raise GVSLInputError(f"{data}: dataset {info.task} is {info.task_type} with {num_classes} output(s); "
                             f"the run asks for {config.task} with {config.num_classes}")
    if init == "scratch":
        torch.manual_seed(config.seed)
        backbone = UNet3D(1, channels)
    else:
        backbone = load_backbone(init)
    splits = {name: dataset.load_split(name) for name in ("train", "val", "test")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    class_names = ["background", *info.classes] if info.task_type == "segmentation" else None
    result = run_transfer(backbone, splits["train"], splits["val"], splits["test"], config,
                          log_dir=out / "dvclive", class_names=class_names, progress=progress)
    summary = {
        "task": info.task, "protocol": config.protocol, "init": init, "metric": result.metric_name,
        "best_iteration": result.best_iteration, "best_val": result.best_val_metric, "test": result.test,
        "val_curve": [[int(i), float(v)] for i, v in result.val_curve], "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration, "config": config.to_dict(),
        "backbone_channels": list(backbone.channels), "dataset": str(data), "dataset_source": info.source,
        "commit": git_commit(),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    atomic_save({"format": "gvsl-kit/transfer-model/1", "config": config.to_dict(),
                 "backbone_channels": list(backbone.channels), "state_dict": result.model.state_dict()},
                out / "model.pt")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TransferConfig(task="segmentation", protocol="linear", num_classes=2)
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset (task SHC, SAC, CCC or SBM)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--init", default="scratch", help="scratch, or a backbone.pt / checkpoint / authors' weights")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--val-every", type=int, default=defaults.val_every)
    parser.add_argument("--crop", type=int, nargs=3, metavar=("D", "H", "W"), default=list(defaults.crop))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--seg-loss", choices=SEG_LOSSES, default=defaults.seg_loss)
    parser.add_argument("--channels", default=",".join(map(str, PAPER_CHANNELS)),
                        help="nine backbone widths, for --init scratch")
    parser.add_argument("--device", default=defaults.device)


def run(args: argparse.Namespace) -> int:
    from gvsl.data import load_prepared
    from gvsl.cli import parse_channels

    info = load_prepared(args.data).info
    if info.task_type not in TASKS:
        raise GVSLInputError(f"{args.data}: dataset task {info.task} has no transfer protocol")
    num_classes = len(info.classes) + 1 if info.task_type == "segmentation" else 1
    config = TransferConfig(task=info.task_type, protocol=args.protocol, num_classes=num_classes,
                            iterations=args.iterations, val_every=args.val_every, lr=args.lr, crop=tuple(args.crop),
                            seed=args.seed, seg_loss=args.seg_loss, device=args.device)
    result = transfer_prepared(args.data, args.out, args.init, config, channels=parse_channels(args.channels))
    print(f"{info.task} {args.protocol} test {result.metric_name} = "
          f"{result.test.get(result.metric_name, float('nan')):.4f} (best iteration {result.best_iteration})")
    return 0
