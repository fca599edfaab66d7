"""Rotation (Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations",
ICLR 2018; in 3-D, Taleb et al., "3D Self-Supervised Methods for Medical Imaging", NeurIPS 2020):
classify which of ten 3-D rotations turned a cubic crop, from the global feature f^g.

The classes (:data:`gvsl.methods.augment.CUBE_ROTATIONS`): no turn, and quarter, half and
three-quarter turns about each of the three axes (Taleb et al.'s ten); every class is drawn with
probability 1/10 per sample. Head: an MLP with BatchNorm on f^g pooled to 2³ cells and flattened
(:func:`gvsl.methods.pretext_heads.layout`): at the default 32³ crops that is Taleb et al.'s fully
connected classifier on the flattened encoder output, and larger crops keep their layout at 2³
cells. Without the BatchNorm the loss stayed at chance (ln 10) for 200 default steps; with it,
it fell to 1.86 (held-out 1.75).
Loss: cross-entropy. Only the encoder is trained, so the decoder keeps its initial (scratch)
weights. Global average pooling alone would discard where in the crop a feature is, which is most
of what tells the turns apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gvsl.errors import GVSLInputError
from gvsl.losses import LossTerms
from gvsl.methods.augment import CUBE_ROTATIONS, rotate
from gvsl.methods.base import Crops, PretextNetwork, PretrainMethod
from gvsl.methods.pretext_heads import LAYOUT_CELLS, MLP, layout

__all__ = ["Rotation", "RotationNetwork"]


class RotationNetwork(PretextNetwork):
    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        width = self.backbone.global_channels
        self.classifier = MLP(LAYOUT_CELLS**3 * width, width, len(CUBE_ROTATIONS), norm=True)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.classifier(layout(self.backbone.encode(image)))}


class Rotation(PretrainMethod):
    key = "rotation"
    title = "Rotation"
    Network = RotationNetwork
    uses_decoder = False

    def check(self, crop: Sequence[int], batch_size: int) -> None:
        if len(set(crop)) != 1:
            raise GVSLInputError(f"rotation: quarter turns about every axis need a cubic crop, got {tuple(crop)}")

    def inputs(self, crops: Crops, generator: torch.Generator):
        images = crops.first
        labels = torch.randint(0, len(CUBE_ROTATIONS), (images.shape[0],), generator=generator, device=generator.device)
        return {"image": rotate(images, labels.tolist())}, {"labels": labels.to(images.device)}

    def loss(self, outputs, targets) -> LossTerms:
        ce = F.cross_entropy(outputs["logits"].float(), targets["labels"])
        return LossTerms(ce, {"ce": ce})
