"""Denoising (Vincent et al., "Extracting and composing robust features with denoising autoencoders",
ICML 2008): restore a crop from additive Gaussian noise, through the U-Net decoder.

Loss: MSE between the sigmoid output and the clean crop. Deviation: one noise level
(``noise_std`` of the [0, 1] intensity range) instead of a tuned schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gvsl.losses import LossTerms
from gvsl.methods.base import Crops, PretrainMethod
from gvsl.methods.restoration import RestorationNetwork, restoration_loss

__all__ = ["Denoising", "DenoisingOptions"]


@dataclass
class DenoisingOptions:
    noise_std: float = 0.1

    def __post_init__(self):
        if not self.noise_std > 0:
            raise ValueError(f"noise_std must be > 0 (no noise leaves nothing to restore), got {self.noise_std}")


class Denoising(PretrainMethod):
    key = "denoising"
    title = "Denoising"
    reference = "Vincent et al., Extracting and composing robust features with denoising autoencoders, ICML 2008"
    Options = DenoisingOptions

    def build(self, in_channels: int, channels: Sequence[int]) -> RestorationNetwork:
        return RestorationNetwork(self, in_channels, channels)

    def inputs(self, crops: Crops, generator: torch.Generator):
        clean = crops.first
        noise = torch.randn(clean.shape, generator=generator, device=generator.device).to(clean)
        return {"image": clean + self.options.noise_std * noise}, {"target": clean}

    def loss(self, outputs, targets) -> LossTerms:
        return restoration_loss(outputs, targets)
