"""GVSL heads: the Z-matching head G_ξ (affine + deformable) and the restoration head R_ι.

Adapted from: He et al., CVPR 2023, Sec. 3.2 ("Z-matching head") and 3.3 ("fundament"), and the
authors' ``GVSL.Affine`` / ``GVSL.Spatial`` / ``res_conv``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gvsl.geometry import affine_from_parameters
from gvsl.nets.unet import ConvBlock, check_group_norm_width
from gvsl.runtime import full_precision

__all__ = ["AffineHead", "DeformableHead", "RestorationHead"]

MAX_ROTATION = math.pi / 9
MAX_SCALE_CHANGE = 0.25
MAX_SHEAR = math.pi / 18
#: largest translation, as a fraction of each axis' half extent (the shared augmentation moves both
#: images together, so the pair differs only by anatomy and pose)
MAX_TRANSLATION = 0.25


class AffineHead(nn.Module):
    """Global similarity: regress an affine that aligns the moving image onto the fixed one.

    "The affine head … predicts the rotation, scaling, translation and shearing parameters" (paper
    Sec. 3.2). ``[f^g_moving, f^g_fixed]`` → block → global average pool → four linear layers
    (rotation 3, scale 3, translation 3, shear 6); rotation = clamp(r)·π/9, scale = 1 + 0.25·clamp(s),
    shear = clamp(h)·π/18 with clamp to [-1, 1].

    The translation output is in units of the half-extent of each axis (the ``affine_grid``
    normalisation), converted to voxels with the fixed image's size. The authors divide a raw
    output by the volume size instead, which makes its scale depend on the crop size.

    Two departures from the authors' head, both needed once the head actually learns (theirs gets no
    gradient, see :func:`gvsl.geometry.affine_from_parameters`):

    * the four regressors start at zero, so the head starts at the identity (as a spatial
      transformer's localisation layer usually does) instead of a random affine;
    * the translation is bounded, ``tanh(t) · 0.25`` half extents. It guards against a translation
      that runs the moving image out of the crop (the warped image is then empty, the NCC exactly 1
      and its gradient 0 for good), which happened within ten iterations when pairs were cropped at
      independent positions. With pairs cropped at one position the bound does not bind (largest
      held-out translation 0.07 voxel after 400 default iterations; the same run unbounded reached
      0.02 voxel and the same held-out NCC), so it costs nothing where training is healthy. Our unit
      is one half extent, where the authors' raw output is about half a voxel, so an unbounded
      head would take far larger Adam steps here. ``tanh`` keeps a gradient everywhere, where a
      clamp would freeze a translation that reached its bound.
    """

    def __init__(self, global_channels: int, hidden_channels: int = 256):
        super().__init__()
        self.block = ConvBlock(2 * global_channels, hidden_channels, "affine_channels")
        self.rotation = nn.Linear(hidden_channels, 3)
        self.scale = nn.Linear(hidden_channels, 3)
        self.translation = nn.Linear(hidden_channels, 3)
        self.shear = nn.Linear(hidden_channels, 6)
        for regressor in (self.rotation, self.scale, self.translation, self.shear):
            nn.init.zeros_(regressor.weight)
            nn.init.zeros_(regressor.bias)

    def forward(self, moving_global: torch.Tensor, fixed_global: torch.Tensor, spatial_shape) -> torch.Tensor:
        """Return the (B, 3, 4) affine (voxel units, (D, H, W) order) for a fixed grid of ``spatial_shape``."""
        code = self.block(torch.cat([moving_global, fixed_global], dim=1)).mean(dim=(2, 3, 4))
        return self._affine(code, spatial_shape)

    @full_precision
    def _affine(self, code: torch.Tensor, spatial_shape) -> torch.Tensor:
        """The regressors and the matrix, in fp32 under autocast as the geometry is (:mod:`gvsl.geometry`)."""
        rotation = torch.clamp(self.rotation(code), -1, 1) * MAX_ROTATION
        scale = 1 + MAX_SCALE_CHANGE * torch.clamp(self.scale(code), -1, 1)
        shear = torch.clamp(self.shear(code), -1, 1) * MAX_SHEAR
        # x, y, z are the W, H, D axes.
        half_extent_xyz = torch.tensor(spatial_shape[::-1], device=code.device, dtype=code.dtype) / 2
        translation = torch.tanh(self.translation(code)) * MAX_TRANSLATION * half_extent_xyz
        return affine_from_parameters(rotation, scale, translation, shear)


class DeformableHead(nn.Module):
    """Local similarity: regress a dense displacement from ``[affine-warped f^l_moving, f^l_fixed]``.

    Block → 3×3×3 convolution → 3-channel DVF in voxels. The last convolution starts near zero (as in
    voxelmorph) so training starts from the identity; the authors keep PyTorch's default init.
    """

    def __init__(self, local_channels: int, hidden_channels: int = 16):
        super().__init__()
        self.block = ConvBlock(2 * local_channels, hidden_channels, "local_head_channels")
        self.flow = nn.Conv3d(hidden_channels, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.flow.weight, std=1e-5)
        nn.init.zeros_(self.flow.bias)

    def forward(self, moving_local: torch.Tensor, fixed_local: torch.Tensor) -> torch.Tensor:
        return self._displacement(self.block(torch.cat([moving_local, fixed_local], dim=1)))

    @full_precision
    def _displacement(self, hidden: torch.Tensor) -> torch.Tensor:
        """The last convolution in fp32 under autocast: the field is geometry (:mod:`gvsl.geometry`), and in bf16
        neighbouring displacements a voxel or more long round to steps of 1/128 voxel or more, which the
        smoothness term's squared differences would then measure."""
        return self.flow(hidden)


class RestorationHead(nn.Sequential):
    """Fundament (Models-Genesis style self-restoration): f^l → 3×3×3 conv → GroupNorm(·/4) → LeakyReLU → 1×1×1 conv."""

    def __init__(self, local_channels: int, out_channels: int = 1, hidden_channels: int = 16):
        check_group_norm_width(hidden_channels, 4, "local_head_channels (restoration)")
        super().__init__(
            nn.Conv3d(local_channels, hidden_channels, kernel_size=3, padding=1),
            nn.GroupNorm(hidden_channels // 4, hidden_channels),
            nn.LeakyReLU(0.2),
            nn.Conv3d(hidden_channels, out_channels, kernel_size=1),
        )
