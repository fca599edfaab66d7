"""BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020): an online encoder, projector and
predictor regress the projection of the other view by a target network, a slow moving average
(EMA) of the online one that receives no gradient.

Loss: 2 − 2·cos(q_online(v₁), z_target(v₂)) + the same with the views swapped, averaged over the
batch. After step k (0-based) of K the target moves to ``τ·target + (1 − τ)·online`` with
``τ = 1 − (1 − momentum)·(cos(π k / K) + 1) / 2`` (BYOL's schedule, base 0.996). Only the encoder
has a target copy that moves: the decoder is not used. Projector and predictor: Linear(8C, 2C) → BatchNorm → ReLU →
Linear(2C, ``projection_dim``) on f^g pooled to 2³ cells, and Linear(d, 2C) → BatchNorm → ReLU →
Linear(2C, d) on the projection. Views as SimCLR's
(:mod:`gvsl.methods.simclr`). Only the online encoder is kept; the target is checkpointed with it.

Deviations: hidden width 2C instead of 4096; BatchNorm statistics per process under DDP.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from gvsl.losses import LossTerms
from gvsl.methods.base import PretextNetwork, PretrainMethod
from gvsl.methods.options import Bounds
from gvsl.methods.pretext_heads import LAYOUT_CELLS, MLP
from gvsl.methods.siamese import TwoViewMethod, ViewOptions, encode_views, split_views

__all__ = ["BYOL", "BYOLNetwork", "BYOLOptions", "regression_loss", "target_momentum"]


@dataclass
class BYOLOptions(ViewOptions):
    momentum: Annotated[float, Bounds(0.0, 1.0, open_high=True)] = 0.996


def target_momentum(base: float, iteration: int, iterations: int) -> float:
    """BYOL's τ after the step of 0-based ``iteration`` of ``iterations``: ``base`` at the first, rising to 1."""
    return 1 - (1 - base) * (math.cos(math.pi * iteration / iterations) + 1) / 2


def _encoder_parameters(backbone: nn.Module):
    yield from backbone.stem.parameters()
    yield from backbone.down.parameters()


class BYOLNetwork(PretextNetwork):
    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        width, dim = self.backbone.global_channels, method.options.projection_dim
        self.projector = MLP(LAYOUT_CELLS**3 * width, 2 * width, dim, norm=True)
        self.predictor = MLP(dim, 2 * width, dim, norm=True)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        self.target_backbone.requires_grad_(False)
        self.target_projector.requires_grad_(False)

    def target_parameters(self):
        yield from _encoder_parameters(self.target_backbone)
        yield from self.target_projector.parameters()

    def online_parameters(self):
        yield from _encoder_parameters(self.backbone)
        yield from self.projector.parameters()

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> dict[str, torch.Tensor]:
        q_1, q_2 = split_views(self.predictor(self.projector(encode_views(self.backbone, view_1, view_2))))
        with torch.no_grad():
            z_1, z_2 = split_views(self.target_projector(encode_views(self.target_backbone, view_1, view_2)))
        return {"q_1": q_1, "q_2": q_2, "z_1": z_1, "z_2": z_2}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        for target, online in zip(self.target_parameters(), self.online_parameters()):
            target.lerp_(online, 1 - tau)


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 − 2·cos(prediction, target) per sample."""
    return 2 - 2 * F.cosine_similarity(prediction.float(), target.float().detach(), dim=1)


class BYOL(TwoViewMethod):
    key = "byol"
    title = "BYOL"
    Options = BYOLOptions
    Network = BYOLNetwork

    def loss(self, outputs, targets) -> LossTerms:
        byol = (
            regression_loss(outputs["q_1"], outputs["z_2"]) + regression_loss(outputs["q_2"], outputs["z_1"])
        ).mean()
        return LossTerms(byol, {"regression": byol})

    def after_step(self, model: nn.Module, iteration: int, iterations: int) -> None:
        model.update_target(target_momentum(self.options.momentum, iteration, iterations))
