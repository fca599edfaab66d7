"""Settings of one pre-training run (:class:`PretrainConfig`) and its learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS, PretrainMethod, build_method
from gvsl.nets import PAPER_CHANNELS
from gvsl.nets.unet import check_channels
from gvsl.runtime import check_precision
from gvsl.settings import from_mapping

__all__ = ["LR_SCHEDULES", "PretrainConfig", "lr_factor"]

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(config: PretrainConfig, iteration: int) -> float:
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
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``
            (:func:`gvsl.runtime.autocast`); losses and geometry stay fp32 in every case.
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
    precision: str = "auto"
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
        check_precision(self.precision)
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
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainConfig:
        return from_mapping(cls, values, "pretrain")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["channels"] = list(self.crop), list(self.channels)
        return d
