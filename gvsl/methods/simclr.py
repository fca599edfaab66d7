"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020): NT-Xent between the projected, pooled f^g of two augmented views of one volume.

Views: two crops of one volume offset by up to ``view_shift`` of the crop, each moved by its own
affine + elastic transform, intensity-curved and noised (:class:`gvsl.methods.augment.ViewAugmentation`).
Projector: Linear(8C, C) → BatchNorm → ReLU → Linear(C, ``projection_dim`` = 128) on f^g pooled to
2³ cells (:func:`gvsl.methods.pretext_heads.layout`; C = the bottleneck width); the loss is MONAI's
``ContrastiveLoss`` (NT-Xent) at ``temperature`` 0.5, SimCLR's value for small batches. Only the
encoder is trained.

Deviation: each of a step's ``batch_size`` volumes has only the other volumes' views as negatives
(2·(batch_size − 1) of them, SimCLR uses thousands), so the task is much easier than SimCLR's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from monai.losses import ContrastiveLoss

from gvsl.errors import GVSLInputError
from gvsl.losses import LossTerms
from gvsl.methods.base import PretextNetwork, PretrainMethod
from gvsl.methods.options import Bounds
from gvsl.methods.pretext_heads import LAYOUT_CELLS, MLP
from gvsl.methods.siamese import TwoViewMethod, ViewOptions, encode_views, split_views

__all__ = ["SimCLR", "SimCLRNetwork", "SimCLROptions"]


@dataclass
class SimCLROptions(ViewOptions):
    temperature: Annotated[float, Bounds(0.0, open_low=True)] = 0.5


class SimCLRNetwork(PretextNetwork):
    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        width = self.backbone.global_channels
        self.projector = MLP(LAYOUT_CELLS**3 * width, width, method.options.projection_dim, norm=True)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> dict[str, torch.Tensor]:
        z_1, z_2 = split_views(self.projector(encode_views(self.backbone, view_1, view_2)))
        return {"z_1": z_1, "z_2": z_2}


class SimCLR(TwoViewMethod):
    key = "simclr"
    title = "SimCLR"
    Options = SimCLROptions
    Network = SimCLRNetwork

    def __init__(self, options=None):
        super().__init__(options)
        self.criterion = ContrastiveLoss(temperature=self.options.temperature)

    def check(self, crop: Sequence[int], batch_size: int) -> None:
        if batch_size < 2:
            raise GVSLInputError("simclr: batch_size must be >= 2; the other volumes' views are the negatives")

    def loss(self, outputs, targets) -> LossTerms:
        nt_xent = self.criterion(outputs["z_1"].float(), outputs["z_2"].float())
        return LossTerms(nt_xent, {"nt_xent": nt_xent})
