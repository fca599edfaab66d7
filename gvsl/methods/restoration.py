"""The restoration network shared by Models Genesis, Denoising and In-painting: the U-Net and a
1×1×1 sigmoid output on f^l, trained to give back the clean crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gvsl.losses import LossTerms, mse_loss
from gvsl.methods.base import PretextNetwork, PretrainMethod
from gvsl.methods.heads import VoxelOutput

__all__ = ["RestorationNetwork", "restoration_loss"]


class RestorationNetwork(PretextNetwork):
    """``forward(image)`` → ``{"restored": (B, C, D, H, W)}``: the U-Net decoder's f^l through :class:`VoxelOutput`."""

    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        self.output = VoxelOutput(self.backbone.local_channels, in_channels)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"restored": self.output(self.backbone(image)[1])}


def restoration_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> LossTerms:
    """MSE of the whole restored crop against the clean one."""
    mse = mse_loss(outputs["restored"], targets["target"])
    return LossTerms(mse, {"mse": mse})
