"""What the two-view methods (SimCLR, BYOL, SimSiam) share: view pairs, their augmentation and an
encoder pass over both views."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch

from gvsl.methods.augment import ViewAugmentation
from gvsl.methods.base import Crops, PretrainMethod
from gvsl.methods.options import Bounds, MethodOptions, Probability
from gvsl.methods.pretext_heads import layout
from gvsl.nets.unet import UNet3D

__all__ = ["TwoViewMethod", "ViewOptions", "encode_views", "split_views"]


@dataclass
class ViewOptions(MethodOptions):
    """Settings of the two views.

    Args:
        view_shift: largest offset of the two crops, as a fraction of the crop size per axis.
        intensity_prob, noise_std: see :class:`gvsl.methods.augment.ViewAugmentation`.
        spatial: keyword arguments of :class:`gvsl.views.RandSpatialTransform` (each view its own draw).
        projection_dim: width of the embedding the loss compares.
    """

    view_shift: Annotated[float, Bounds(0.0, 1.0, words="a fraction in [0, 1] of the crop")] = 0.25
    intensity_prob: Probability = 0.8
    noise_std: Annotated[float, Bounds(0.0, math.inf, open_high=True, words="a number >= 0")] = 0.05
    spatial: dict[str, Any] = field(default_factory=dict)
    projection_dim: Annotated[int, Bounds(2, integer=True)] = 128

    def __post_init__(self):
        super().__post_init__()
        ViewAugmentation(self.spatial, self.intensity_prob, self.noise_std)  # checks the spatial ranges


def encode_views(backbone: UNet3D, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
    """:func:`~gvsl.methods.pretext_heads.layout` of f^g of both views, view 1's rows first, in one encoder pass
    (GroupNorm is per sample, so this equals two passes; the MLPs' BatchNorm then sees both views)."""
    return layout(backbone.encode(torch.cat([view_1, view_2])))


def split_views(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of view 1 and of view 2 of :func:`encode_views`' order."""
    half = embeddings.shape[0] // 2
    return embeddings[:half], embeddings[half:]


class TwoViewMethod(PretrainMethod):
    """Draws two overlapping crops of one volume and augments each independently."""

    Options = ViewOptions
    sampling = "views"
    uses_decoder = False

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.augment = ViewAugmentation(self.options.spatial, self.options.intensity_prob, self.options.noise_std)

    def view_shift(self, crop: Sequence[int]) -> int:
        return int(self.options.view_shift * min(crop))

    def inputs(self, crops: Crops, generator: torch.Generator):
        return {"view_1": self.augment(crops.first, generator), "view_2": self.augment(crops.second, generator)}, {}
