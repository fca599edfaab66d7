"""What Models Genesis, Denoising and In-painting share: the U-Net and a 1×1×1 sigmoid output on f^l,
trained to give back the clean crop from a corrupted one."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gvsl.losses import LossTerms, mse_loss
from gvsl.methods.base import Crops, PretextNetwork, PretrainMethod
from gvsl.methods.pretext_heads import VoxelOutput

__all__ = ["RestorationMethod", "RestorationNetwork", "restoration_loss"]


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


class RestorationMethod(PretrainMethod):
    """Restores the clean crops (:meth:`target`) from their corruption (:meth:`corrupt`): MSE of the whole crop."""

    Network = RestorationNetwork

    def target(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The clean crops to restore (the crops themselves unless a method transforms them first)."""
        return crops

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The network's input made from the clean crops."""
        raise NotImplementedError(f"{self.key} builds its own inputs")

    def inputs(self, crops: Crops, generator: torch.Generator):
        clean = self.target(crops.first, generator)
        return {"image": self.corrupt(clean, generator)}, {"target": clean}

    def loss(self, outputs, targets) -> LossTerms:
        return restoration_loss(outputs, targets)
