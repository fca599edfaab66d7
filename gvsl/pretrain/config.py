"""Settings of one pre-training run (:class:`PretrainConfig`) and its learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS, PretrainMethod, build_method
from gvsl.nets import PAPER_CHANNELS
from gvsl.nets.unet import check_channels
from gvsl.runtime import PRECISIONS
from gvsl.settings import Bounds, Checked, OneOf, from_mapping, to_mapping

__all__ = ["LR_SCHEDULES", "PretrainConfig", "PretrainSchedule", "lr_factor"]

LR_SCHEDULES = ("constant", "cosine")

Count = Annotated[int, Bounds(1, integer=True)]
NonNegative = Annotated[int, Bounds(0, integer=True)]


def lr_factor(config: PretrainSchedule, iteration: int) -> float:
    """Multiplier of ``config.lr`` at (0-based) ``iteration``."""
    if config.lr_schedule == "constant":
        return 1.0
    if iteration < config.warmup:
        return (iteration + 1) / (config.warmup + 1)
    progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(kw_only=True)
class PretrainSchedule(Checked):
    """How every pre-training run trains: the settings that one run (:class:`PretrainConfig`) and the
    pipeline's ``pretrain`` group (:class:`gvsl.pipeline.config.PretrainSettings`) share. The defaults are
    the paper's.

    Args:
        iterations: optimisation steps (paper 2×10⁵).
        batch_size: pairs per step (paper 2); methods of single crops draw twice as many crops, two-view
            methods this many volumes (see :mod:`gvsl.methods.base`).
        crop: training crop (D, H, W) in voxels.
        crop_jitter: largest shift, in voxels per axis, of x_B's crop against x_A's (0: the same position);
            methods that draw pairs only.
        lr: Adam learning rate (paper 1e-4).
        lr_schedule: ``constant`` (the paper) or ``cosine`` (linear warm-up over ``warmup`` iterations,
            then a cosine decay to 0 at ``iterations``), for short schedules.
        warmup: warm-up iterations of the cosine schedule.
        checkpoint_every: write ``checkpoint.pt`` every this many iterations (and at the end).
        log_every: log loss terms every this many iterations.
        eval_every: evaluate on the held-out pairs (if given) every this many iterations, before the first
            one and at the end.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``
            (:func:`gvsl.runtime.autocast`); losses and geometry stay fp32 in every case.
    """

    iterations: Count = 200_000
    batch_size: Count = 2
    crop: Annotated[tuple[int, int, int], Bounds(8, integer=True, words="at least 8 voxels")] = (128, 128, 128)
    crop_jitter: NonNegative = 0
    lr: Annotated[float, Bounds(0.0, math.inf, open_low=True, open_high=True, words="a positive number")] = 1e-4
    lr_schedule: Annotated[str, OneOf(LR_SCHEDULES)] = "constant"
    warmup: NonNegative = 0
    checkpoint_every: Count = 1000
    log_every: Count = 10
    eval_every: Count = 1000
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.warmup >= self.iterations and self.lr_schedule == "cosine":
            raise GVSLInputError(f"warmup ({self.warmup}) must be shorter than iterations ({self.iterations})")


@dataclass(kw_only=True)
class PretrainConfig(PretrainSchedule):
    """Settings of one pre-training run: the schedule, and which method of which widths from which seed on
    which device.

    Args:
        method: one of :data:`gvsl.methods.PRETRAIN_METHODS` (GVSL, an ablation or a baseline).
        channels: nine backbone widths.
        seed: seeds model initialisation, sampling and augmentation.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…
        options: the method's own settings (its ``Options`` dataclass, e.g.
            :class:`gvsl.methods.gvsl.GVSLOptions`); ``params.yaml`` → ``pretrain.options.<method>``.
    """

    method: Annotated[str, OneOf(tuple(PRETRAIN_METHODS))] = "gvsl"
    channels: tuple[int, ...] = PAPER_CHANNELS
    seed: NonNegative = 0
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
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
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainConfig:
        return from_mapping(cls, values, "pretrain")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)
