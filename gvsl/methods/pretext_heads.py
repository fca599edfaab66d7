"""Pretext heads shared by several baselines: pooled global features, MLPs and a voxel-wise output."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LAYOUT_CELLS", "MLP", "VoxelOutput", "layout", "pooled"]

#: :func:`layout` pools f^g to this many cells per axis
LAYOUT_CELLS = 2


def pooled(global_feature: torch.Tensor) -> torch.Tensor:
    """(B, C, d, h, w) f^g → (B, C) by global average pooling (as the classification transfer head)."""
    return global_feature.mean(dim=(2, 3, 4))


def layout(global_feature: torch.Tensor) -> torch.Tensor:
    """(B, C, d, h, w) f^g → (B, C · 8): average-pooled to 2³ cells and flattened, which keeps where in the
    crop each feature is (at the default 32³ crops f^g is 2³, so this is f^g itself). Global pooling alone
    leaves the features of different crops nearly parallel (cosine similarity above 0.98 at
    initialisation on the default cohort), which starved the contrastive and rotation losses."""
    return nn.functional.adaptive_avg_pool3d(global_feature, LAYOUT_CELLS).flatten(1)


class MLP(nn.Sequential):
    """Linear → [BatchNorm] → ReLU → Linear: the projectors and predictors of SimCLR, BYOL and SimSiam, and
    the classifier of Rotation (all with ``norm=True``).

    ``norm=True`` adds the BatchNorm these methods' papers put in their MLPs: it centres the batch's
    embeddings, without which the common component of the features made every pair of embeddings
    nearly parallel. Its statistics are over the step's embeddings (both views of every volume:
    2 × batch_size of them), and per process under DDP (the papers synchronise them).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, norm: bool = False):
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, out_features)]
        super().__init__(*layers)


class VoxelOutput(nn.Sequential):
    """1×1×1 convolution of f^l + sigmoid: Models Genesis' output layer, also the denoiser's and in-painter's
    (intensities are in [0, 1])."""

    def __init__(self, local_channels: int, out_channels: int):
        super().__init__(nn.Conv3d(local_channels, out_channels, kernel_size=1), nn.Sigmoid())
