"""The spatial transform shared by x_A, t'(x_A) and x_B: a random affine, then an elastic field, fused into
one displacement so that every volume is interpolated once.

Adapted from: He et al., CVPR 2023, and the authors' ``utils/Transform_self.py`` (ranges, elastic field,
order of the transforms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gvsl.geometry import affine_from_parameters, compose_affine_ddf, warp
from gvsl.views.draws import check_non_negative, check_range, check_volume, rand, uniform

__all__ = ["RandSpatialTransform", "elastic_displacement", "elastic_smoothing_matrix"]

_WARP_MODES = ("bilinear", "nearest")
# Gaussian kernels are truncated at this many standard deviations (the authors and scipy.ndimage).
_GAUSSIAN_TRUNCATE = 4.0
# The default coarse elastic grid keeps at least this many coarse nodes per σ, so trilinear
# interpolation of the smoothed noise loses almost no variance (see ``elastic_smoothing_matrix``).
_NODES_PER_SIGMA = 3


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised float64 1-D Gaussian with radius ``int(4σ + 0.5)`` (the authors' and scipy's truncation)."""
    radius = int(_GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def elastic_smoothing_matrix(size: int, sigma: float, coarse_size: int | None = None) -> torch.Tensor:
    """Linear map from uniform noise on a grid of ``coarse_size`` nodes to the smoothed field along one axis.

    With ``coarse_size == size`` it is the authors' definition: a Gaussian of ``sigma`` voxels, truncated at
    4σ, with zero padding at the borders (a banded Toeplitz matrix). With fewer nodes the noise lives on
    a coarse grid of spacing ``f = (size - 1) / (coarse_size - 1)`` voxels spanning the same axis; it is
    smoothed there with σ/f and interpolated linearly to the voxels, and scaled by ``f^(-1/2)``, since the
    variance of smoothed white noise scales as 1/σ per axis. The 3-D field then has the full-resolution
    field's standard deviation and correlation length (``tests/test_views.py`` checks both) at a fraction
    of the cost. Because the map is linear, the 3-D field is three small matrix products.

    Args:
        size: voxels along the axis.
        sigma: Gaussian standard deviation in voxels (> 0).
        coarse_size: noise nodes along the axis, 1 ≤ coarse_size ≤ size; ``None`` means ``size``.

    Returns:
        (size, coarse_size) float64 matrix.
    """
    coarse_size = size if coarse_size is None else coarse_size
    if not 1 <= coarse_size <= size:
        raise ValueError(f"coarse_size must be in [1, {size}] for an axis of {size} voxels, got {coarse_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 voxels, got {sigma}")
    spacing = (size - 1) / (coarse_size - 1) if coarse_size > 1 else 1.0
    kernel = _gaussian_kernel(sigma / spacing)
    radius = kernel.numel() // 2
    nodes = torch.arange(coarse_size)
    lag = nodes[None, :] - nodes[:, None]
    # Banded Toeplitz: entry (i, j) is kernel[j - i] within the radius; beyond it (and past the
    # borders, i.e. zero padding) the weight is 0.
    band = kernel[(lag + radius).clamp(0, 2 * radius)]
    smoothing = torch.where(lag.abs() <= radius, band, torch.zeros((), dtype=torch.float64))
    # Linear interpolation from the coarse nodes to voxel positions p / spacing.
    position = torch.arange(size, dtype=torch.float64) / spacing
    lower = position.floor().clamp(max=coarse_size - 1)
    frac = position - lower
    interpolation = torch.zeros(size, coarse_size, dtype=torch.float64)
    interpolation[torch.arange(size), lower.long()] = 1 - frac
    upper = (lower + 1).clamp(max=coarse_size - 1).long()
    interpolation[torch.arange(size), upper] += frac
    return interpolation @ smoothing / math.sqrt(spacing)


def elastic_displacement(
    noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, spatial_shape: Sequence[int]
) -> torch.Tensor:
    """α · Gaussian_σ(noise) on the voxel grid: the authors' elastic field.

    Args:
        noise: (B, 3, nD, nH, nW) uniform(−1, 1) offsets on a grid of n ≤ (D, H, W) nodes per axis that
            spans the volume; n equal to the volume's size is the full-resolution definition, fewer nodes
            the coarse-grid construction of :func:`elastic_smoothing_matrix`.
        alpha: (B,) amplitudes.
        sigma: (B,) smoothing standard deviations in voxels.
        spatial_shape: (D, H, W).

    Returns:
        (B, 3, D, H, W) displacement in voxels, channels (D, H, W), on ``noise``'s device and dtype.
    """
    if noise.ndim != 5 or noise.shape[1] != 3:
        raise ValueError(f"noise: expecting shape (B, 3, nD, nH, nW), got {tuple(noise.shape)}")
    if len(spatial_shape) != 3:
        raise ValueError(f"spatial_shape: expecting (D, H, W), got {tuple(spatial_shape)}")
    batch = noise.shape[0]
    if alpha.shape != (batch,) or sigma.shape != (batch,):
        raise ValueError(
            f"alpha and sigma: expecting shape ({batch},), got {tuple(alpha.shape)} and {tuple(sigma.shape)}"
        )
    fields = []
    for sample, amplitude, smoothness in zip(noise, alpha.tolist(), sigma.tolist()):
        m_d, m_h, m_w = (
            elastic_smoothing_matrix(size, smoothness, nodes).to(noise)
            for size, nodes in zip(spatial_shape, sample.shape[1:])
        )
        # Contract the smallest axes first: (3, nD, nH, nW) -> (3, nD, nH, W) -> (3, nD, H, W) -> (3, D, H, W).
        field = sample @ m_w.T
        field = torch.einsum("hy,cdyw->cdhw", m_h, field)
        field = torch.einsum("dz,czhw->cdhw", m_d * amplitude, field)
        fields.append(field)
    return torch.stack(fields)


class RandSpatialTransform:
    """One random affine + elastic transform per sample, applied identically to several volumes.

    The affine is ``Shear · Scale · R_z · R_y · R_x`` with a translation (:func:`gvsl.geometry.affine_from_parameters`),
    every parameter uniform in its range. The elastic field is the authors': per-voxel uniform(−1, 1)
    offsets per axis, Gaussian-smoothed with σ voxels (zero padding), times α, with α and σ uniform per
    sample. It is computed on a coarse noise grid (:func:`elastic_smoothing_matrix`), which keeps its
    statistics and costs a few milliseconds instead of a full-resolution 3-D convolution. The affine
    acts first and the elastic field second, as in the authors' script, fused exactly into one field by
    :func:`gvsl.geometry.compose_affine_ddf`, so every volume is interpolated once.

    Args:
        rotation: largest rotation angle about each axis, radians (paper π/9).
        scale: range of the scale factor along each axis (paper 0.75–1.25).
        translation: largest translation along each axis as a fraction of that axis' size (0.1). The
            authors pass 0.1 · size in their normalised [−1, 1] frame, where it moves ±5 % of the size.
        shear: largest of the six shear angles, radians (paper π/18).
        elastic_alpha: range of the elastic amplitude α (paper 0–512).
        elastic_sigma: range of the elastic smoothness σ in voxels (paper 10–13).
        elastic_grid_step: target spacing of the elastic noise grid in voxels; ``None`` picks
            ``max(1, int(σ / 3))`` (3 or 4 for the paper's σ); 1 is the full-resolution definition.
    """

    def __init__(
        self,
        rotation: float = math.pi / 9,
        scale: Sequence[float] = (0.75, 1.25),
        translation: float = 0.1,
        shear: float = math.pi / 18,
        elastic_alpha: Sequence[float] = (0.0, 512.0),
        elastic_sigma: Sequence[float] = (10.0, 13.0),
        elastic_grid_step: int | None = None,
    ):
        self.rotation = check_non_negative("rotation", rotation)
        self.translation = check_non_negative("translation", translation)
        self.shear = check_non_negative("shear", shear)
        if self.shear >= math.pi / 2:
            raise ValueError(f"shear must be < π/2 (its tangent enters the matrix), got {shear}")
        self.scale = check_range("scale", scale, minimum=1e-3)
        self.elastic_alpha = check_range("elastic_alpha", elastic_alpha, minimum=0.0)
        self.elastic_sigma = check_range("elastic_sigma", elastic_sigma, minimum=1e-3)
        if elastic_grid_step is not None and (int(elastic_grid_step) != elastic_grid_step or elastic_grid_step < 1):
            raise ValueError(f"elastic_grid_step must be None or an integer >= 1, got {elastic_grid_step}")
        self.elastic_grid_step = elastic_grid_step

    def sample_affine(self, batch: int, spatial_shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Draw (batch, 3, 4) affines in the kit's convention (voxel units, (D, H, W) order), on the generator's
        device."""
        depth, height, width = spatial_shape
        rotation = uniform(generator, (batch, 3), -self.rotation, self.rotation)
        scale = uniform(generator, (batch, 3), *self.scale)
        # The parameters follow the x, y, z = W, H, D naming of geometry.affine_from_parameters.
        extent_xyz = torch.tensor([width, height, depth], dtype=torch.float32, device=generator.device)
        translation = uniform(generator, (batch, 3), -self.translation, self.translation) * extent_xyz
        shear = uniform(generator, (batch, 6), -self.shear, self.shear)
        return affine_from_parameters(rotation, scale, translation, shear)

    def _grid_nodes(self, size: int, sigma: float) -> int:
        step = self.elastic_grid_step or max(1, int(sigma / _NODES_PER_SIGMA))
        return size if step == 1 or size == 1 else math.ceil((size - 1) / step) + 1

    def elastic_field(
        self,
        alpha: torch.Tensor,
        sigma: torch.Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator,
        device=None,
    ) -> torch.Tensor:
        """Draw the elastic displacement for given per-sample α and σ.

        Args:
            alpha, sigma: (B,) amplitudes and smoothness (voxels).
            spatial_shape: (D, H, W).
            generator: source of the noise.
            device: where the field is computed; default the generator's.

        Returns:
            (B, 3, D, H, W) displacement in voxels, channels (D, H, W).
        """
        fields = []
        for amplitude, smoothness in zip(alpha.reshape(-1, 1), sigma.reshape(-1, 1)):
            nodes = [self._grid_nodes(size, float(smoothness)) for size in spatial_shape]
            noise = (rand(generator, (1, 3, *nodes)) * 2 - 1).to(device)
            fields.append(elastic_displacement(noise, amplitude.to(noise), smoothness.to(noise), spatial_shape))
        return torch.cat(fields)

    def sample(self, batch: int, spatial_shape: Sequence[int], generator: torch.Generator, device=None) -> torch.Tensor:
        """Draw one transform per sample as a dense displacement.

        Args:
            batch: number of samples B.
            spatial_shape: (D, H, W) in voxels.
            generator: source of all random draws.
            device: device of the result; default the generator's.

        Returns:
            (B, 3, D, H, W) float32 backward displacement in voxels, channels (D, H, W):
            ``warped[p] = moving[p + ddf[p]]`` (see :mod:`gvsl.geometry`).
        """
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != 3 or min(spatial_shape) < 1:
            raise ValueError(f"spatial_shape: expecting three positive sizes (D, H, W), got {spatial_shape}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        device = generator.device if device is None else torch.device(device)
        affine = self.sample_affine(batch, spatial_shape, generator).to(device)
        alpha = uniform(generator, (batch,), *self.elastic_alpha)
        sigma = uniform(generator, (batch,), *self.elastic_sigma)
        if self.elastic_alpha[1] > 0:
            flow = self.elastic_field(alpha, sigma, spatial_shape, generator, device)
        else:
            flow = torch.zeros(batch, 3, *spatial_shape, device=device)
        return compose_affine_ddf(affine, flow)

    def __call__(
        self, *volumes: torch.Tensor, generator: torch.Generator, modes: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Warp every volume by the same freshly drawn transform.

        Args:
            *volumes: (B, Cᵢ, D, H, W) tensors with one batch size and spatial shape.
            generator: source of all random draws.
            modes: per volume, "bilinear" (images, the default) or "nearest" (label maps).

        Returns:
            The warped volumes, in order, each with its input's shape and dtype (zeros outside).
        """
        if not volumes:
            raise ValueError("expecting at least one volume to warp, got none")
        for index, volume in enumerate(volumes):
            check_volume(volume, f"volume {index}")
        first = volumes[0]
        for index, volume in enumerate(volumes[1:], start=1):
            if volume.shape[0] != first.shape[0] or volume.shape[2:] != first.shape[2:]:
                raise ValueError(
                    f"volume {index} shape {tuple(volume.shape)} does not match volume 0 shape "
                    f"{tuple(first.shape)} (batch and spatial sizes must agree)"
                )
        modes = ["bilinear"] * len(volumes) if modes is None else list(modes)
        if len(modes) != len(volumes):
            raise ValueError(f"modes: expecting one mode per volume ({len(volumes)}), got {len(modes)}")
        for index, (mode, volume) in enumerate(zip(modes, volumes)):
            if mode not in _WARP_MODES:
                raise ValueError(f"modes[{index}]: expecting one of {_WARP_MODES}, got {mode!r}")
            if mode == "bilinear" and not volume.is_floating_point():
                raise ValueError(
                    f"volume {index}: bilinear warping needs a floating-point tensor, got {volume.dtype} "
                    "(use mode 'nearest' for label maps)"
                )

        ddf = self.sample(first.shape[0], first.shape[2:], generator, first.device)
        warped: list[torch.Tensor | None] = [None] * len(volumes)
        for mode in dict.fromkeys(modes):
            members = [i for i, m in enumerate(modes) if m == mode]
            # One warp per mode over the volumes stacked as channels: the sampling grid is built and
            # traversed once (at 128³ on CPU three stacked volumes cost ~1.4x one, not 3x).
            stacked = torch.cat([volumes[i].to(ddf.dtype) for i in members], dim=1)
            moved = warp(stacked, ddf, mode)
            parts = torch.split(moved, [volumes[i].shape[1] for i in members], dim=1)
            for i, part in zip(members, parts):
                warped[i] = part.to(volumes[i].dtype).contiguous()
        return tuple(warped)
