"""In-painting (Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016): restore
the voxels of masked boxes from their context, through the U-Net decoder.

Per sample, boxes of Models Genesis' in-painting sizes (1/10–1/5 of each axis; at least one, each
further one with p 0.95, at most ``max_boxes``) are set to 0; the loss is the MSE over the masked
voxels only. Deviations: the adversarial term is left out (Pathak et al. weigh it 0.001), and the
masks are random boxes rather than one central region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gvsl.losses import LossTerms
from gvsl.methods.augment import inpaint_boxes
from gvsl.methods.base import Crops, PretrainMethod
from gvsl.methods.restoration import RestorationNetwork
from gvsl.views import AppearanceTransform

__all__ = ["Inpainting", "InpaintingOptions"]


@dataclass
class InpaintingOptions:
    max_boxes: int = 10

    def __post_init__(self):
        if int(self.max_boxes) != self.max_boxes or self.max_boxes < 1:
            raise ValueError(f"max_boxes must be an integer >= 1, got {self.max_boxes}")


class Inpainting(PretrainMethod):
    key = "inpainting"
    title = "In-painting"
    reference = "Pathak et al., Context Encoders: Feature Learning by Inpainting, CVPR 2016"
    Options = InpaintingOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.boxes = AppearanceTransform(max_inpaint_blocks=int(self.options.max_boxes))

    def build(self, in_channels: int, channels: Sequence[int]) -> RestorationNetwork:
        return RestorationNetwork(self, in_channels, channels)

    def inputs(self, crops: Crops, generator: torch.Generator):
        clean = crops.first
        mask = torch.zeros_like(clean, dtype=torch.bool)
        for sample_mask in mask:
            for box in inpaint_boxes(self.boxes, clean.shape[2:], generator):
                sample_mask[(slice(None), *box)] = True
        return {"image": clean.masked_fill(mask, 0.0)}, {"target": clean, "mask": mask}

    def loss(self, outputs, targets) -> LossTerms:
        mask = targets["mask"]
        error = (outputs["restored"].float() - targets["target"].float()) ** 2
        masked = error[mask].mean()
        return LossTerms(masked, {"masked_mse": masked})
