"""The views GVSL trains on: an appearance-corrupted x_A and one random spatial transform shared by three volumes.

Per step (paper Sec. 3; the authors' ``Train_GVSL.py``): t'(x_A) is x_A after Models-Genesis appearance
transforms (local pixel shuffling, a Bézier intensity curve, in-painting, optionally out-painting); one
random spatial transform (affine, then elastic) then moves x_A, t'(x_A) and x_B identically. The model
sees t'(x_A) and x_B; spatial(x_A) is the target of both the restoration and the NCC loss.

All randomness comes from an explicit ``torch.Generator`` (its state is checkpointed, so a resumed run
draws the same views); numbers are drawn on the generator's device and moved to the data's. Every
transform returns new tensors and never writes into its input (MONAI's ``RandCoarseShuffle`` and
``RandCoarseDropout`` do, which would corrupt the restoration target as well).

Adapted from: Zhou et al., "Models Genesis", MedIA 2021 (appearance transforms); He et al., CVPR 2023,
and the authors' ``utils/Transform_self.py`` (ranges, elastic field, order of the transforms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gvsl.geometry import affine_from_parameters, compose_affine_ddf, warp

__all__ = [
    "AppearanceTransform",
    "RandSpatialTransform",
    "Views",
    "bezier_intensity_curve",
    "bezier_intensity_map",
    "elastic_displacement",
    "elastic_smoothing_matrix",
    "make_views",
    "time_augmentation",
]

_WARP_MODES = ("bilinear", "nearest")
# Models Genesis adds each further in-painting (and out-painting) box with this probability.
_ANOTHER_BOX_PROB = 0.95
# Painted boxes keep this many voxels away from the border (Models Genesis), where the volume allows.
_BOX_MARGIN = 3
# Gaussian kernels are truncated at this many standard deviations (the authors and scipy.ndimage).
_GAUSSIAN_TRUNCATE = 4.0
# The default coarse elastic grid keeps at least this many coarse nodes per σ, so trilinear
# interpolation of the smoothed noise loses almost no variance (see ``elastic_smoothing_matrix``).
_NODES_PER_SIGMA = 3


# ----------------------------------------------------------------------------------------------------
# Random draws and input checks
# ----------------------------------------------------------------------------------------------------


def _rand(generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """uniform[0, 1) numbers drawn on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device)


def _uniform(generator: torch.Generator, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
    return _rand(generator, shape) * (high - low) + low


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer in ``[low, high)``; callers guarantee ``high > low``."""
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device))


def _happens(generator: torch.Generator, probability: float) -> bool:
    """One Bernoulli(probability) draw; always consumes one number so the stream does not depend on it."""
    return bool(_rand(generator, (1,)) < probability)


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def _check_non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _check_range(name: str, value: Sequence[float], minimum: float) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"{name}: expecting a (low, high) pair, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name}: low must not exceed high, got ({low}, {high})")
    if low < minimum:
        raise ValueError(f"{name}: values must be >= {minimum}, got ({low}, {high})")
    return low, high


def _check_volume(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expecting 5-D input (B, C, D, H, W), got {shape}")


# ----------------------------------------------------------------------------------------------------
# Appearance transform t'
# ----------------------------------------------------------------------------------------------------


def bezier_intensity_curve(points: torch.Tensor, samples: int = 1001) -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup table of the cubic Bézier curve with control points (0, 0), p1, p2, (1, 1).

    The curve is evaluated in Bernstein form and its x and y samples are sorted independently, as
    Models Genesis does: the table is then monotone and maps [0, 1] onto [0, 1] even where the control
    points make the raw curve fold back.

    Args:
        points: (2, 2) inner control points ``[[x1, y1], [x2, y2]]`` in [0, 1].
        samples: number of curve parameters t, evenly spaced in [0, 1].

    Returns:
        (xs, ys): non-decreasing float64 (samples,) tensors from 0 to 1.
    """
    if tuple(points.shape) != (2, 2):
        raise ValueError(f"points: expecting shape (2, 2) [[x1, y1], [x2, y2]], got {tuple(points.shape)}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64, device=points.device)
    control = torch.cat([points.new_zeros(1, 2), points, points.new_ones(1, 2)]).double()
    bernstein = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=1)
    curve = bernstein @ control
    return torch.sort(curve[:, 0]).values, torch.sort(curve[:, 1]).values


def bezier_intensity_map(image: torch.Tensor, points: torch.Tensor, samples: int = 1001,
                         decreasing: bool = False) -> torch.Tensor:
    """Map intensities through the monotone Bézier curve of ``points`` (``np.interp`` on its table).

    Args:
        image: tensor of any shape with intensities in [0, 1]; values outside are clamped to the ends.
        points: (2, 2) inner control points, see :func:`bezier_intensity_curve`.
        samples: curve samples in the lookup table (the authors use 10⁵; 10³ change y by < 10⁻⁴).
        decreasing: pair the sorted x samples with the y samples in reverse, which inverts the
            intensities along the curve (Models Genesis does this half the time by sorting x alone).

    Returns:
        New tensor of ``image``'s shape and dtype.
    """
    xs, ys = bezier_intensity_curve(points.to(image.device), samples)
    if decreasing:
        ys = ys.flip(0)
    xs, ys = xs.to(image.dtype), ys.to(image.dtype)
    x = image.clamp(0.0, 1.0).contiguous()
    # right=True picks the last of repeated table entries, so every segment has x_hi >= x_lo.
    upper = torch.searchsorted(xs, x, right=True).clamp(1, xs.numel() - 1)
    x_lo, x_hi, y_lo, y_hi = xs[upper - 1], xs[upper], ys[upper - 1], ys[upper]
    width = x_hi - x_lo
    weight = torch.where(width > 0, (x - x_lo) / width.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))
    return y_lo + weight * (y_hi - y_lo)


def _random_box(spatial: Sequence[int], size_bounds: Callable[[int], tuple[int, int]],
                generator: torch.Generator) -> tuple[slice, ...]:
    """One axis-aligned box: per axis a size in ``size_bounds(axis_size)`` = [low, high), placed at random
    at least ``_BOX_MARGIN`` voxels from the border where the axis is long enough."""
    box = []
    for size in spatial:
        low, high = size_bounds(size)
        low = min(max(1, low), size)
        extent = min(size, _randint(generator, low, max(low + 1, high)))
        margin = min(_BOX_MARGIN, (size - extent) // 2)
        start = _randint(generator, margin, max(margin + 1, size - extent - margin))
        box.append(slice(start, start + extent))
    return tuple(box)


def _side_bounds(size: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """[low, high) box side for an axis of ``size`` voxels: ``fractions`` of it, rounded down (the small
    offset keeps exact fractions such as 1/5 of 35 from rounding to one voxel less)."""
    return tuple(math.floor(size * f + 1e-9) for f in fractions)  # type: ignore[return-value]


def _outpaint_size(size: int) -> tuple[int, int]:
    """Models Genesis out-painting kept box side: the axis minus [3/7, 4/7) of it."""
    return size - 4 * size // 7 + 1, size - 3 * size // 7 + 1


class AppearanceTransform:
    """Models-Genesis appearance corruption t' of x_A (the input of the restoration "fundament").

    Applied in this order, each with its own probability and with fresh draws for every sample:

    1. *Local pixel shuffling*: the voxels inside small blocks (side ``max(2, size // 20)`` per axis, the
       Models-Genesis side, at least 2 so it is not a no-op on small crops) are permuted, each block with
       its own permutation. The authors scatter 5000 possibly overlapping blocks with a Python loop (and
       reuse one permutation for all of them); here the blocks tile the volume from a random offset and a
       random ``shuffle_fraction`` of them is permuted in one gather. The authors' 5000 blocks of 6³ cover
       1 − exp(−5000·6³/128³) ≈ 40 % of a 128³ volume, hence the default 0.4. Every value stays in its
       block, so the multiset of values in each block is preserved.
    2. *Non-linear intensity mapping* through a random monotone Bézier curve
       (:func:`bezier_intensity_map`, control points uniform in [0, 1]²).
    3. *Out-painting* (probability ``outpaint_prob``; off in the paper's runs): one box, plus up to four
       more each with probability 0.95, keeps the image (sides 3/7–4/7 of each axis); all else becomes
       uniform[0, 1) noise. Otherwise *in-painting* (probability ``inpaint_prob``): up to
       ``max_inpaint_blocks`` boxes (sides ``inpaint_sides`` of each axis: the GVSL authors' 1/10–1/5,
       Models Genesis' 1/6–1/3; each further box with probability 0.95) are filled with uniform[0, 1)
       noise. Models Genesis paints one or the other; the authors' GVSL script in-paints every time
       (its probability argument is unused), the paper states 0.9.

    Args:
        local_shuffle_prob: probability of local pixel shuffling (paper 0.8).
        nonlinear_prob: probability of the Bézier intensity mapping (paper 0.9).
        inpaint_prob: probability of in-painting when not out-painting (paper 0.9).
        outpaint_prob: probability of out-painting (paper runs: 0).
        max_inpaint_blocks: most in-painted boxes (the GVSL authors 30, Models Genesis 5).
        shuffle_fraction: expected fraction of the tiled blocks that are shuffled.
        inpaint_sides: range of an in-painted box's side, as fractions of each axis.
        invert_prob: probability that the intensity curve is decreasing (Models Genesis 0.5; the GVSL
            authors 0). Drawn only when it is above 0, so the default keeps the random stream.
    """

    def __init__(self, local_shuffle_prob: float = 0.8, nonlinear_prob: float = 0.9, inpaint_prob: float = 0.9,
                 outpaint_prob: float = 0.0, max_inpaint_blocks: int = 30, shuffle_fraction: float = 0.4,
                 inpaint_sides: Sequence[float] = (0.1, 0.2), invert_prob: float = 0.0):
        self.local_shuffle_prob = _check_probability("local_shuffle_prob", local_shuffle_prob)
        self.nonlinear_prob = _check_probability("nonlinear_prob", nonlinear_prob)
        self.inpaint_prob = _check_probability("inpaint_prob", inpaint_prob)
        self.outpaint_prob = _check_probability("outpaint_prob", outpaint_prob)
        self.shuffle_fraction = _check_probability("shuffle_fraction", shuffle_fraction)
        if int(max_inpaint_blocks) != max_inpaint_blocks or max_inpaint_blocks < 0:
            raise ValueError(f"max_inpaint_blocks must be an integer >= 0, got {max_inpaint_blocks}")
        self.max_inpaint_blocks = int(max_inpaint_blocks)
        low, high = _check_range("inpaint_sides", inpaint_sides, minimum=0.0)
        if high > 1:
            raise ValueError(f"inpaint_sides must be fractions of an axis in [0, 1], got {tuple(inpaint_sides)}")
        self.inpaint_sides = (low, high)
        self.invert_prob = _check_probability("invert_prob", invert_prob)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Corrupt every sample of ``image`` independently.

        Args:
            image: (B, C, D, H, W) floating-point intensities in [0, 1]; not modified.
            generator: source of all random draws.

        Returns:
            New (B, C, D, H, W) tensor of ``image``'s dtype and device.
        """
        _check_volume(image, "image")
        if not image.is_floating_point():
            raise ValueError(f"image: expecting floating-point intensities in [0, 1], got dtype {image.dtype}")
        return torch.stack([self._corrupt(sample, generator) for sample in image])

    def _corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """t' of one (C, D, H, W) sample. Each step returns a new tensor; a copy is made when none runs."""
        out = x
        if _happens(generator, self.local_shuffle_prob):
            out = self.local_pixel_shuffle(out, generator)
        if _happens(generator, self.nonlinear_prob):
            points = _rand(generator, (2, 2))
            out = bezier_intensity_map(out, points, decreasing=bool(self.invert_prob)
                                       and _happens(generator, self.invert_prob))
        if _happens(generator, self.outpaint_prob):
            out = self.outpaint(out, generator)
        elif _happens(generator, self.inpaint_prob):
            out = self.inpaint(out, generator)
        return out.clone() if out is x else out

    def local_pixel_shuffle(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Permute the voxels inside a random ``shuffle_fraction`` of the blocks tiling a (C, D, H, W) volume.

        All channels of a voxel move together. Voxels in the partial blocks at the borders stay put.
        """
        channels, *spatial = x.shape
        block = [max(2, size // 20) for size in spatial]
        offset = [_randint(generator, 0, side) for side in block]
        counts = [(size - start) // side for size, start, side in zip(spatial, offset, block)]
        out = x.clone()
        if min(counts) == 0:  # the volume is smaller than one block along some axis
            return out
        region = (slice(None), *(slice(start, start + n * side) for start, n, side in zip(offset, counts, block)))
        # (C, nD, bD, nH, bH, nW, bW) -> (C, blocks, voxels per block)
        tiles = out[region].reshape(channels, counts[0], block[0], counts[1], block[1], counts[2], block[2])
        tiles = tiles.permute(0, 1, 3, 5, 2, 4, 6).reshape(channels, math.prod(counts), math.prod(block))
        chosen = torch.nonzero(_rand(generator, (tiles.shape[1],)) < self.shuffle_fraction).squeeze(1)
        order = _rand(generator, (chosen.numel(), tiles.shape[2])).argsort(dim=1)
        chosen, order = chosen.to(x.device), order.to(x.device)
        tiles[:, chosen] = torch.gather(tiles[:, chosen], 2, order.expand(channels, -1, -1))
        tiles = tiles.reshape(channels, *counts, *block).permute(0, 1, 4, 2, 5, 3, 6)
        out[region] = tiles.reshape(out[region].shape)
        return out

    def sample_inpaint_boxes(self, spatial_shape: Sequence[int], generator: torch.Generator) -> list[tuple[slice, ...]]:
        """The boxes that :meth:`inpaint` fills: at most ``max_inpaint_blocks``, each further one with p 0.95.

        Returns:
            List of (D, H, W) slice triples.
        """
        boxes = []
        while len(boxes) < self.max_inpaint_blocks and _happens(generator, _ANOTHER_BOX_PROB):
            boxes.append(_random_box(spatial_shape, lambda size: _side_bounds(size, self.inpaint_sides), generator))
        return boxes

    def inpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill the boxes of :meth:`sample_inpaint_boxes` of a (C, D, H, W) volume with uniform[0, 1) noise."""
        channels, *spatial = x.shape
        out = x.clone()
        for box in self.sample_inpaint_boxes(spatial, generator):
            noise = _rand(generator, [channels] + [s.stop - s.start for s in box])
            out[(slice(None), *box)] = noise.to(out)
        return out

    def sample_outpaint_boxes(self, spatial_shape: Sequence[int], generator: torch.Generator) -> list[tuple[slice, ...]]:
        """The boxes that :meth:`outpaint` keeps: one, plus up to four more each with probability 0.95."""
        boxes = [_random_box(spatial_shape, _outpaint_size, generator)]
        while len(boxes) < 5 and _happens(generator, _ANOTHER_BOX_PROB):
            boxes.append(_random_box(spatial_shape, _outpaint_size, generator))
        return boxes

    def outpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Keep the boxes of :meth:`sample_outpaint_boxes` of a (C, D, H, W) volume; uniform[0, 1) noise elsewhere."""
        boxes = self.sample_outpaint_boxes(x.shape[1:], generator)
        out = _rand(generator, x.shape).to(x)
        for box in boxes:
            region = (slice(None), *box)
            out[region] = x[region]
        return out


# ----------------------------------------------------------------------------------------------------
# Spatial transform
# ----------------------------------------------------------------------------------------------------


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


def elastic_displacement(noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                         spatial_shape: Sequence[int]) -> torch.Tensor:
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
        raise ValueError(f"alpha and sigma: expecting shape ({batch},), got {tuple(alpha.shape)} and {tuple(sigma.shape)}")
    fields = []
    for sample, amplitude, smoothness in zip(noise, alpha.tolist(), sigma.tolist()):
        m_d, m_h, m_w = (elastic_smoothing_matrix(size, smoothness, nodes).to(noise)
                         for size, nodes in zip(spatial_shape, sample.shape[1:]))
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

    def __init__(self, rotation: float = math.pi / 9, scale: Sequence[float] = (0.75, 1.25), translation: float = 0.1,
                 shear: float = math.pi / 18, elastic_alpha: Sequence[float] = (0.0, 512.0),
                 elastic_sigma: Sequence[float] = (10.0, 13.0), elastic_grid_step: int | None = None):
        self.rotation = _check_non_negative("rotation", rotation)
        self.translation = _check_non_negative("translation", translation)
        self.shear = _check_non_negative("shear", shear)
        if self.shear >= math.pi / 2:
            raise ValueError(f"shear must be < π/2 (its tangent enters the matrix), got {shear}")
        self.scale = _check_range("scale", scale, minimum=1e-3)
        self.elastic_alpha = _check_range("elastic_alpha", elastic_alpha, minimum=0.0)
        self.elastic_sigma = _check_range("elastic_sigma", elastic_sigma, minimum=1e-3)
        if elastic_grid_step is not None and (int(elastic_grid_step) != elastic_grid_step or elastic_grid_step < 1):
            raise ValueError(f"elastic_grid_step must be None or an integer >= 1, got {elastic_grid_step}")
        self.elastic_grid_step = elastic_grid_step

    def sample_affine(self, batch: int, spatial_shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Draw (batch, 3, 4) affines in the kit's convention (voxel units, (D, H, W) order), on the generator's device."""
        depth, height, width = spatial_shape
        rotation = _uniform(generator, (batch, 3), -self.rotation, self.rotation)
        scale = _uniform(generator, (batch, 3), *self.scale)
        # The parameters follow the x, y, z = W, H, D naming of geometry.affine_from_parameters.
        extent_xyz = torch.tensor([width, height, depth], dtype=torch.float32, device=generator.device)
        translation = _uniform(generator, (batch, 3), -self.translation, self.translation) * extent_xyz
        shear = _uniform(generator, (batch, 6), -self.shear, self.shear)
        return affine_from_parameters(rotation, scale, translation, shear)

    def _grid_nodes(self, size: int, sigma: float) -> int:
        step = self.elastic_grid_step or max(1, int(sigma / _NODES_PER_SIGMA))
        return size if step == 1 or size == 1 else math.ceil((size - 1) / step) + 1

    def elastic_field(self, alpha: torch.Tensor, sigma: torch.Tensor, spatial_shape: Sequence[int],
                      generator: torch.Generator, device=None) -> torch.Tensor:
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
            noise = (_rand(generator, (1, 3, *nodes)) * 2 - 1).to(device)
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
        alpha = _uniform(generator, (batch,), *self.elastic_alpha)
        sigma = _uniform(generator, (batch,), *self.elastic_sigma)
        if self.elastic_alpha[1] > 0:
            flow = self.elastic_field(alpha, sigma, spatial_shape, generator, device)
        else:
            flow = torch.zeros(batch, 3, *spatial_shape, device=device)
        return compose_affine_ddf(affine, flow)

    def __call__(self, *volumes: torch.Tensor, generator: torch.Generator,
                 modes: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
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
            _check_volume(volume, f"volume {index}")
        first = volumes[0]
        for index, volume in enumerate(volumes[1:], start=1):
            if volume.shape[0] != first.shape[0] or volume.shape[2:] != first.shape[2:]:
                raise ValueError(f"volume {index} shape {tuple(volume.shape)} does not match volume 0 shape "
                                 f"{tuple(first.shape)} (batch and spatial sizes must agree)")
        modes = ["bilinear"] * len(volumes) if modes is None else list(modes)
        if len(modes) != len(volumes):
            raise ValueError(f"modes: expecting one mode per volume ({len(volumes)}), got {len(modes)}")
        for index, (mode, volume) in enumerate(zip(modes, volumes)):
            if mode not in _WARP_MODES:
                raise ValueError(f"modes[{index}]: expecting one of {_WARP_MODES}, got {mode!r}")
            if mode == "bilinear" and not volume.is_floating_point():
                raise ValueError(f"volume {index}: bilinear warping needs a floating-point tensor, got {volume.dtype} "
                                 "(use mode 'nearest' for label maps)")

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


# ----------------------------------------------------------------------------------------------------
# One training step's views
# ----------------------------------------------------------------------------------------------------


@dataclass
class Views:
    """One step's inputs, each (B, C, D, H, W).

    Attributes:
        view_a: spatial(t'(x_A)), the corrupted view the backbone sees for A.
        target_a: spatial(x_A), the target of restoration and of the NCC loss.
        image_b: spatial(x_B), the image the Z-matching head aligns onto A.
    """

    view_a: torch.Tensor
    target_a: torch.Tensor
    image_b: torch.Tensor


def make_views(x_a: torch.Tensor, x_b: torch.Tensor, appearance: AppearanceTransform,
               spatial: RandSpatialTransform, generator: torch.Generator) -> Views:
    """Corrupt x_A, then move x_A, t'(x_A) and x_B by one shared random spatial transform.

    Args:
        x_a, x_b: (B, C, D, H, W) floating-point intensities in [0, 1] of two different subjects; not modified.
        appearance: the corruption t'.
        spatial: the shared spatial transform.
        generator: source of all random draws (appearance first, then spatial).

    Returns:
        :class:`Views` of new tensors.
    """
    _check_volume(x_a, "x_a")
    _check_volume(x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b: expecting the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    corrupted = appearance(x_a, generator)
    view_a, target_a, image_b = spatial(corrupted, x_a, x_b, generator=generator)
    return Views(view_a=view_a, target_a=target_a, image_b=image_b)


def time_augmentation(size: int = 128, repeats: int = 3, device: str | torch.device = "cpu",
                      seed: int = 0) -> dict[str, float]:
    """Median wall-clock seconds of the default transforms on ``size``³ volumes, batch 1, after one warm-up.

    Returns:
        ``{"spatial_seconds_<size>": ...}`` for warping three volumes by one spatial transform (sampling
        included) and ``{"appearance_seconds_<size>": ...}`` for the appearance transform of one volume
        with every corruption switched on (its worst case).
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    volumes = [torch.rand(1, 1, size, size, size, generator=generator).to(device) for _ in range(3)]
    spatial = RandSpatialTransform()
    appearance = AppearanceTransform(local_shuffle_prob=1.0, nonlinear_prob=1.0, inpaint_prob=1.0)

    def median_seconds(step: Callable[[], object]) -> float:
        seconds = []
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        return sorted(seconds[1:])[repeats // 2]

    return {
        f"spatial_seconds_{size}": median_seconds(lambda: spatial(*volumes, generator=generator)),
        f"appearance_seconds_{size}": median_seconds(lambda: appearance(volumes[0], generator)),
    }
