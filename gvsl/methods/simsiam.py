"""SimSiam (Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021): one encoder
and projector for both views, a predictor on one side and a stop-gradient on the other.

Loss: −½·(cos(p₁, sg(z₂)) + cos(p₂, sg(z₁))), averaged over the batch. Projector:
Linear(8C, 2C) → BatchNorm → ReLU → Linear(2C, ``projection_dim``) on f^g pooled to 2³ cells;
predictor a bottleneck Linear(d, d/4) → BatchNorm → ReLU → Linear(d/4, d), as SimSiam's
2048 → 512 → 2048. Views as
SimCLR's (:mod:`gvsl.methods.simclr`). Only the encoder is trained.

Deviations: a two-layer projector instead of three; BatchNorm statistics per process under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gvsl.losses import LossTerms
from gvsl.methods.base import PretextNetwork, PretrainMethod
from gvsl.methods.pretext_heads import LAYOUT_CELLS, MLP
from gvsl.methods.siamese import TwoViewMethod, encode_views, split_views

__all__ = ["SimSiam", "SimSiamNetwork"]


class SimSiamNetwork(PretextNetwork):
    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        width, dim = self.backbone.global_channels, method.options.projection_dim
        self.projector = MLP(LAYOUT_CELLS**3 * width, 2 * width, dim, norm=True)
        self.predictor = MLP(dim, max(1, dim // 4), dim, norm=True)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.projector(encode_views(self.backbone, view_1, view_2))
        (p_1, p_2), (z_1, z_2) = split_views(self.predictor(z)), split_views(z)
        return {"p_1": p_1, "p_2": p_2, "z_1": z_1, "z_2": z_2}


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """−cos(p, sg(z)) per sample: the stop-gradient is the ``detach``."""
    return -F.cosine_similarity(p.float(), z.float().detach(), dim=1)


class SimSiam(TwoViewMethod):
    key = "simsiam"
    title = "SimSiam"
    Network = SimSiamNetwork

    def loss(self, outputs, targets) -> LossTerms:
        siamese = (
            0.5 * (negative_cosine(outputs["p_1"], outputs["z_2"]) + negative_cosine(outputs["p_2"], outputs["z_1"]))
        ).mean()
        return LossTerms(siamese, {"negative_cosine": siamese})
