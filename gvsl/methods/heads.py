"""Pretext heads shared by several baselines: pooled global features, MLPs and a voxel-wise output."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "VoxelOutput", "pooled"]


def pooled(global_feature: torch.Tensor) -> torch.Tensor:
    """(B, C, d, h, w) f^g → (B, C) by global average pooling (as the classification transfer head)."""
    return global_feature.mean(dim=(2, 3, 4))


class MLP(nn.Sequential):
    """Linear → [LayerNorm] → ReLU → Linear: the projectors and predictors of SimCLR, BYOL and SimSiam, and
    the classifiers of Rotation.

    BYOL and SimSiam normalise with BatchNorm; at the 2–4 samples per step these runs use, batch
    statistics are noise, so ``norm=True`` uses LayerNorm (a per-sample normalisation).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, norm: bool = False):
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if norm:
            layers.append(nn.LayerNorm(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, out_features)]
        super().__init__(*layers)


class VoxelOutput(nn.Sequential):
    """1×1×1 convolution of f^l + sigmoid: Models Genesis' output layer, also the denoiser's and in-painter's
    (intensities are in [0, 1])."""

    def __init__(self, local_channels: int, out_channels: int):
        super().__init__(nn.Conv3d(local_channels, out_channels, kernel_size=1), nn.Sigmoid())
