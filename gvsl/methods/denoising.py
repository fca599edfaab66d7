"""Denoising (Vincent et al., "Extracting and composing robust features with denoising autoencoders",
ICML 2008): restore a crop from additive Gaussian noise, through the U-Net decoder.

Loss: MSE between the sigmoid output and the clean crop. Deviation: one noise level
(``noise_std`` of the [0, 1] intensity range) instead of a tuned schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from gvsl.methods.options import Bounds, MethodOptions
from gvsl.methods.restoration import RestorationMethod

__all__ = ["Denoising", "DenoisingOptions"]


@dataclass
class DenoisingOptions(MethodOptions):
    noise_std: Annotated[float, Bounds(0.0, open_low=True, why="no noise leaves nothing to restore")] = 0.1


class Denoising(RestorationMethod):
    key = "denoising"
    title = "Denoising"
    Options = DenoisingOptions

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(clean.shape, generator=generator, device=generator.device).to(clean)
        return clean + self.options.noise_std * noise
