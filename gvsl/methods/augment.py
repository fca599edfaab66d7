"""Augmentations of the baselines, drawn from an explicit ``torch.Generator`` like :mod:`gvsl.views`.

MONAI's random transforms draw from NumPy states of their own and act on one sample at a time;
these act on a batch, draw from the engine's checkpointed generator and never write into their
input, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gvsl.views import RandSpatialTransform, bezier_intensity_map

__all__ = ["CUBE_ROTATIONS", "ViewAugmentation", "inpaint_mask", "random_flips", "rotate"]

#: Rotation's classes (Taleb et al., NeurIPS 2020): no rotation, then 90°, 180° and 270° about each of
#: the D, H and W axes, as (quarter turns, plane of the turn)
CUBE_ROTATIONS: tuple[tuple[int, tuple[int, int]], ...] = (
    (0, (3, 4)),
    *((k, (3, 4)) for k in (1, 2, 3)),  # about D: the H-W plane turns
    *((k, (2, 4)) for k in (1, 2, 3)),  # about H
    *((k, (2, 3)) for k in (1, 2, 3)),  # about W
)


def rotate(x: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Each (C, D, H, W) sample of ``x`` turned by its :data:`CUBE_ROTATIONS` class (cubic crops)."""
    turned = []
    for sample, label in zip(x, labels):
        quarter_turns, plane = CUBE_ROTATIONS[int(label)]
        turned.append(torch.rot90(sample[None], quarter_turns, dims=plane)[0])
    return torch.stack(turned).contiguous()


def random_flips(generator: torch.Generator, *volumes: torch.Tensor, probability: float) -> tuple[torch.Tensor, ...]:
    """Models Genesis' flips: per sample, up to three times, with ``probability`` flip along a random axis.
    All ``volumes`` get the same flips (an image and its target)."""
    draws = torch.rand(volumes[0].shape[0], 3, 2, generator=generator, device=generator.device).tolist()
    axes_per_sample = []
    for sample_draws in draws:
        axes: list[int] = []
        for keep_going, axis in sample_draws:
            if keep_going >= probability:
                break
            axes.append(1 + int(axis * 3))
        # flipping an axis twice undoes it
        axes_per_sample.append([axis for axis in (1, 2, 3) if axes.count(axis) % 2])
    out = []
    for volume in volumes:
        samples = [torch.flip(sample, axes) if axes else sample for sample, axes in zip(volume, axes_per_sample)]
        out.append(torch.stack(samples).contiguous())
    return tuple(out)


class ViewAugmentation:
    """One random view of each sample, for the contrastive and Siamese methods (SimCLR, BYOL, SimSiam).

    A spatial transform (GVSL's affine + elastic, each view its own draw), then with ``intensity_prob``
    a random monotone Bézier intensity curve, then Gaussian noise of standard deviation ``noise_std``.
    3-D adaptations of SimCLR's crops and colour distortion (Taleb et al., NeurIPS 2020); no blur.

    Args:
        spatial: keyword arguments of :class:`gvsl.views.RandSpatialTransform`.
        intensity_prob: probability of the intensity curve.
        noise_std: standard deviation of the additive noise (intensities in [0, 1]).
    """

    def __init__(self, spatial: dict | None = None, intensity_prob: float = 0.8, noise_std: float = 0.05):
        # intensity_prob and noise_std are checked where they are set (gvsl.methods.siamese.ViewOptions)
        self.spatial = RandSpatialTransform(**(spatial or {}))
        self.intensity_prob = intensity_prob
        self.noise_std = noise_std

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        (moved,) = self.spatial(x, generator=generator)
        curves = torch.rand(x.shape[0], 3, 2, generator=generator, device=generator.device)
        samples = [
            bezier_intensity_map(sample, curve[1:]) if curve[0, 0] < self.intensity_prob else sample
            for sample, curve in zip(moved, curves)
        ]
        out = torch.stack(samples)
        noise = torch.randn(out.shape, generator=generator, device=generator.device).to(out)
        return (out + self.noise_std * noise).contiguous()


def inpaint_mask(
    shape: Sequence[int], generator: torch.Generator, fraction: float, sides: tuple[float, float] = (1 / 6, 1 / 3)
) -> torch.Tensor:
    """(C, D, H, W) boolean mask of random boxes, added until they cover at least ``fraction`` of the volume.

    Each box's side along an axis is uniform in ``sides`` (fractions of the axis, at least one voxel)
    and its corner uniform over the whole axis, so any coverage is reachable.
    """
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    spatial = shape[1:]
    while mask.float().mean() < fraction:
        draws = torch.rand(2, 3, generator=generator, device=generator.device).tolist()
        box = []
        for size, side_draw, corner_draw in zip(spatial, draws[0], draws[1]):
            low, high = max(1, math.floor(size * sides[0])), max(1, math.floor(size * sides[1]))
            side = min(size, low + int(side_draw * (high - low + 1)))
            corner = int(corner_draw * (size - side + 1))
            box.append(slice(corner, corner + side))
        mask[(slice(None), *box)] = True
    return mask
