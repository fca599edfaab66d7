"""In-painting (Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016): restore
the voxels of masked boxes from their context, through the U-Net decoder.

Per sample, random boxes (sides 1/6–1/3 of each axis, Models Genesis' in-painting sizes, anywhere in
the crop) are added until they cover at least ``mask_fraction`` of the crop (default 1/4, the share Pathak et al.'s
masks remove) and set to 0; the loss is the MSE over the masked voxels only. Deviations: the
adversarial term is left out (Pathak et al. weigh it 0.001), and the masks are 3-D boxes rather
than 2-D random regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from gvsl.losses import LossTerms
from gvsl.methods.augment import inpaint_mask
from gvsl.methods.base import Crops
from gvsl.methods.options import Bounds, MethodOptions
from gvsl.methods.restoration import RestorationMethod

__all__ = ["Inpainting", "InpaintingOptions"]


@dataclass
class InpaintingOptions(MethodOptions):
    mask_fraction: Annotated[float, Bounds(0.0, 1.0, open_low=True, open_high=True)] = 0.25


class Inpainting(RestorationMethod):
    """Restores the masked voxels only: the mask travels with the targets to the loss."""

    key = "inpainting"
    title = "In-painting"
    Options = InpaintingOptions

    def inputs(self, crops: Crops, generator: torch.Generator):
        clean = crops.first
        mask = torch.stack(
            [inpaint_mask(clean.shape[1:], generator, self.options.mask_fraction) for _ in range(clean.shape[0])]
        ).to(clean.device)
        return {"image": clean.masked_fill(mask, 0.0)}, {"target": clean, "mask": mask}

    def loss(self, outputs, targets) -> LossTerms:
        mask = targets["mask"]
        error = (outputs["restored"].float() - targets["target"].float()) ** 2
        masked = error[mask].mean()
        return LossTerms(masked, {"masked_mse": masked})
