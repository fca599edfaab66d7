"""The two views GVSL trains on: an appearance-corrupted x_A and a shared random spatial transform.

Per step (paper Sec. 3 and the authors' training script): t'(x_A) is x_A after Models-Genesis
appearance transforms (local pixel shuffling, a Bézier intensity curve, in-painting, optionally
out-painting); then one random spatial transform (affine + elastic) is applied identically to
x_A, t'(x_A) and x_B.

All randomness comes from an explicit ``torch.Generator`` (its state is checkpointed, so a resumed
run draws the same views). Every transform returns new tensors and never writes into its input
(MONAI's ``RandCoarseShuffle``/``RandCoarseDropout`` do, which would corrupt the restoration target).

Adapted from: Zhou et al., "Models Genesis", MedIA 2021 (appearance transforms) and He et al.,
CVPR 2023 (spatial ranges).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering

from gvsl.geometry import affine_from_parameters, compose_affine_ddf, warp

__all__ = [
    "AppearanceTransform",
    "RandSpatialTransform",
    "Views",
    "bezier_intensity_curve",
    "make_views",
    "time_augmentation",
]


def _uniform(generator: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer in [low, high); ``high <= low`` yields ``low``."""
    return low if high <= low else int(torch.randint(low, high, (1,), generator=generator))


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_range(name: str, value: Sequence[float], minimum: float | None = None) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"{name}: expecting (low, high), got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name}: low must not exceed high, got ({low}, {high})")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name}: values must be >= {minimum}, got ({low}, {high})")
    return low, high


def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name}: expecting 5-D input (B, C, D, H, W), got shape {tuple(x.shape)}")


def bezier_intensity_curve(points: torch.Tensor, samples: int = 1001) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone lookup table of the cubic Bézier curve through (0,0), p1, p2, (1,1).

    The curve's x and y samples are sorted independently (as Models Genesis does), which makes the
    mapping monotone and onto [0, 1] even when the control points make the raw curve fold back.

    Args:
        points: (2, 2) inner control points ``[[x1, y1], [x2, y2]]`` in [0, 1].
        samples: number of samples along the curve.

    Returns:
        (xs, ys): increasing (samples,) tensors with xs[0] = ys[0] = 0 and xs[-1] = ys[-1] = 1.
    """
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
    control = torch.cat([torch.zeros(1, 2, dtype=torch.float64), points.double(), torch.ones(1, 2, dtype=torch.float64)])
    basis = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=1)
    curve = basis @ control
    return torch.sort(curve[:, 0]).values, torch.sort(curve[:, 1]).values


def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``np.interp`` in torch (values clamped to the table's ends)."""
    xs, ys = xs.to(x), ys.to(x)
    x = x.clamp(xs[0], xs[-1])
    idx = torch.searchsorted(xs, x.contiguous(), right=True).clamp(1, xs.numel() - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    weight = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp_min(1e-12), torch.zeros_like(x))
    return y0 + weight * (y1 - y0)


def _box_mask(spatial, boxes: list[tuple[tuple[int, int], ...]], device) -> torch.Tensor:
    """Union of axis-aligned boxes ((d0, d1), (h0, h1), (w0, w1)) as a (D, H, W) bool mask."""
    mask = torch.zeros(spatial, dtype=torch.bool, device=device)
    for (d0, d1), (h0, h1), (w0, w1) in boxes:
        mask[d0:d1, h0:h1, w0:w1] = True
    return mask


class AppearanceTransform:
    """Models-Genesis appearance corruption t' (the fundament's input).

    Args:
        local_shuffle_prob: probability of local pixel shuffling (paper 0.8).
        nonlinear_prob: probability of the Bézier intensity mapping (paper 0.9).
        inpaint_prob: probability of in-painting (paper 0.9).
        outpaint_prob: probability of out-painting (off in the paper's runs).
        max_inpaint_blocks: most in-painted boxes; each further box is added with probability 0.95.
        shuffle_fraction: fraction of the volume covered by shuffled blocks.

    Local pixel shuffling permutes the voxels inside blocks of side ``max(2, size // 20)`` (the
    Models-Genesis block size). The authors scatter 5000 overlapping blocks with a Python loop;
    here the blocks tile the volume and a random ``shuffle_fraction`` of them is shuffled at once,
    which covers a similar share of a 128³ volume (~half) in one vectorised operation.

    ``__call__(image, generator)`` takes (B, C, D, H, W) intensities in [0, 1] and returns a new
    tensor; each sample gets its own draws.
    """

    def __init__(self, local_shuffle_prob: float = 0.8, nonlinear_prob: float = 0.9, inpaint_prob: float = 0.9,
                 outpaint_prob: float = 0.0, max_inpaint_blocks: int = 30, shuffle_fraction: float = 0.5):
        for name, value in (("local_shuffle_prob", local_shuffle_prob), ("nonlinear_prob", nonlinear_prob),
                            ("inpaint_prob", inpaint_prob), ("outpaint_prob", outpaint_prob),
                            ("shuffle_fraction", shuffle_fraction)):
            _check_probability(name, value)
        if max_inpaint_blocks < 0:
            raise ValueError(f"max_inpaint_blocks must be >= 0, got {max_inpaint_blocks}")
        self.local_shuffle_prob = local_shuffle_prob
        self.nonlinear_prob = nonlinear_prob
        self.inpaint_prob = inpaint_prob
        self.outpaint_prob = outpaint_prob
        self.max_inpaint_blocks = max_inpaint_blocks
        self.shuffle_fraction = shuffle_fraction

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(image, "image")
        return torch.stack([self._one(sample, generator) for sample in image])

    def _happens(self, probability: float, generator: torch.Generator) -> bool:
        return bool(torch.rand(1, generator=generator) < probability)

    def _one(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self._happens(self.local_shuffle_prob, generator):
            x = self.local_pixel_shuffle(x, generator)
        if self._happens(self.nonlinear_prob, generator):
            x = self.nonlinear(x, generator)
        if self._happens(self.outpaint_prob, generator):
            x = self.outpaint(x, generator)
        elif self._happens(self.inpaint_prob, generator):
            x = self.inpaint(x, generator)
        return x

    def local_pixel_shuffle(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Permute voxels inside randomly chosen blocks of a (C, D, H, W) volume."""
        c, *spatial = x.shape
        block = [max(2, s // 20) for s in spatial]
        counts = [s // b for s, b in zip(spatial, block)]
        if min(counts) == 0:
            return x.clone()
        inner = [n * b for n, b in zip(counts, block)]
        tiles = x[:, : inner[0], : inner[1], : inner[2]]
        tiles = tiles.reshape(c, counts[0], block[0], counts[1], block[1], counts[2], block[2])
        tiles = tiles.permute(0, 1, 3, 5, 2, 4, 6).reshape(c, -1, math.prod(block))
        n_tiles, voxels = tiles.shape[1], tiles.shape[2]
        chosen = torch.rand(n_tiles, generator=generator) < self.shuffle_fraction
        order = torch.rand(n_tiles, voxels, generator=generator).argsort(dim=1)
        order[~chosen] = torch.arange(voxels)
        order = order.to(x.device)
        shuffled = torch.gather(tiles, 2, order.expand(c, -1, -1))
        shuffled = shuffled.reshape(c, *counts, *block).permute(0, 1, 4, 2, 5, 3, 6).reshape(c, *inner)
        out = x.clone()
        out[:, : inner[0], : inner[1], : inner[2]] = shuffled
        return out

    def nonlinear(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Map intensities through a random monotone Bézier curve."""
        xs, ys = bezier_intensity_curve(torch.rand(2, 2, generator=generator))
        return _interp(x, xs, ys)

    def _random_box(self, spatial, low_frac: tuple[int, int], generator, margin: int = 3):
        box = []
        for s in spatial:
            size = _randint(generator, s * low_frac[0] // low_frac[1], max(s * low_frac[0] // low_frac[1] + 1, s // 5))
            size = max(1, min(size, s - 2 * margin)) if s > 2 * margin else max(1, min(size, s))
            start = _randint(generator, min(margin, s - size), s - size - margin)
            box.append((start, start + size))
        return tuple(box)

    def inpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Replace up to ``max_inpaint_blocks`` boxes (1/10–1/5 of each axis) by uniform noise."""
        _, *spatial = x.shape
        boxes = []
        while len(boxes) < self.max_inpaint_blocks and self._happens(0.95, generator):
            boxes.append(self._random_box(spatial, (1, 10), generator))
        if not boxes:
            return x.clone()
        noise = torch.rand(x.shape, generator=generator).to(x)
        return torch.where(_box_mask(spatial, boxes, x.device), noise, x)

    def outpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Keep a few large boxes (3/7–4/7 of each axis removed) and replace the rest by uniform noise."""
        _, *spatial = x.shape
        boxes = []
        while not boxes or (len(boxes) < 5 and self._happens(0.95, generator)):
            box = []
            for s in spatial:
                size = s - _randint(generator, 3 * s // 7, 4 * s // 7)
                start = _randint(generator, min(3, s - size), s - size - 3)
                box.append((start, start + size))
            boxes.append(tuple(box))
        noise = torch.rand(x.shape, generator=generator).to(x)
        return torch.where(_box_mask(spatial, boxes, x.device), x, noise)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian truncated at 4σ (as scipy.ndimage and the authors)."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class RandSpatialTransform:
    """One random affine + elastic transform, drawn per sample and applied identically to several volumes.

    Args:
        rotation: largest rotation angle about each axis, radians (paper π/9).
        scale: range of the scale factor along each axis (paper 0.75–1.25).
        translation: largest translation as a fraction of each axis size (paper 0.1).
        shear: largest shear angle for each of the six shear terms, radians (paper π/18).
        elastic_alpha: range of the elastic amplitude α (paper 0–512).
        elastic_sigma: range of the elastic smoothness σ in voxels (paper 10–13).
        elastic_grid_step: the elastic noise is drawn and smoothed on a grid this many times
            coarser and upsampled (``None``: about σ/3, at least 1). Its amplitude is rescaled by
            ``step^(-3/2)`` so the field keeps the statistics of the full-resolution definition
            (per-voxel uniform(−1, 1) offsets, Gaussian-smoothed, times α); see the tests.

    ``sample`` draws a (B, 3, D, H, W) displacement in the kit's convention (voxels, backward map,
    see :mod:`gvsl.geometry`): the affine first, then the elastic field, fused exactly.
    """

    def __init__(self, rotation: float = math.pi / 9, scale: Sequence[float] = (0.75, 1.25), translation: float = 0.1,
                 shear: float = math.pi / 18, elastic_alpha: Sequence[float] = (0.0, 512.0),
                 elastic_sigma: Sequence[float] = (10.0, 13.0), elastic_grid_step: int | None = None):
        for name, value in (("rotation", rotation), ("translation", translation), ("shear", shear)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.rotation, self.translation, self.shear = float(rotation), float(translation), float(shear)
        self.scale = _check_range("scale", scale, minimum=1e-3)
        self.elastic_alpha = _check_range("elastic_alpha", elastic_alpha, minimum=0.0)
        self.elastic_sigma = _check_range("elastic_sigma", elastic_sigma, minimum=1e-3)
        if elastic_grid_step is not None and elastic_grid_step < 1:
            raise ValueError(f"elastic_grid_step must be >= 1, got {elastic_grid_step}")
        self.elastic_grid_step = elastic_grid_step

    def sample_affine(self, batch: int, spatial_shape, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, 4) affine in voxels, (D, H, W) order."""
        rotation = _uniform(generator, (batch, 3), -self.rotation, self.rotation)
        scale = _uniform(generator, (batch, 3), *self.scale)
        extent_xyz = torch.tensor([spatial_shape[2], spatial_shape[1], spatial_shape[0]], dtype=torch.float32)
        translation = _uniform(generator, (batch, 3), -self.translation, self.translation) * extent_xyz
        shear = _uniform(generator, (batch, 6), -self.shear, self.shear)
        return affine_from_parameters(rotation, scale, translation, shear)

    def elastic_field(self, batch: int, spatial_shape, generator: torch.Generator, alpha: torch.Tensor,
                      sigma: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """α · Gaussian_σ(uniform(−1, 1) noise), (B, 3, D, H, W) in voxels, drawn on a coarse grid."""
        fields = []
        for b in range(batch):
            s = float(sigma[b])
            f = step or self.elastic_grid_step or max(1, int(s // 3))
            coarse = [math.ceil((n - 1) / f) + 1 for n in spatial_shape]
            noise = torch.rand(1, 3, *coarse, generator=generator) * 2 - 1
            smooth = separable_filtering(noise, _gaussian_kernel(s / f)) * f ** -1.5
            if f > 1:
                full = [(n - 1) * f + 1 for n in coarse]
                smooth = F.interpolate(smooth, size=full, mode="trilinear", align_corners=True)
            fields.append(smooth[:, :, : spatial_shape[0], : spatial_shape[1], : spatial_shape[2]] * float(alpha[b]))
        return torch.cat(fields)

    def sample(self, batch: int, spatial_shape, generator: torch.Generator, device=None) -> torch.Tensor:
        """Draw a (B, 3, D, H, W) displacement (voxels) combining the affine and the elastic field."""
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != 3:
            raise ValueError(f"spatial_shape: expecting (D, H, W), got {spatial_shape}")
        affine = self.sample_affine(batch, spatial_shape, generator)
        alpha = _uniform(generator, (batch,), *self.elastic_alpha)
        sigma = _uniform(generator, (batch,), *self.elastic_sigma)
        if self.elastic_alpha[1] > 0:
            elastic = self.elastic_field(batch, spatial_shape, generator, alpha, sigma)
        else:
            elastic = torch.zeros(batch, 3, *spatial_shape)
        return compose_affine_ddf(affine.to(device), elastic.to(device))

    def __call__(self, *volumes: torch.Tensor, generator: torch.Generator,
                 modes: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
        """Warp every (B, C, D, H, W) volume by the same random transform.

        ``modes`` gives "bilinear" (images) or "nearest" (label maps) per volume.
        """
        if not volumes:
            raise ValueError("expecting at least one volume")
        for i, v in enumerate(volumes):
            _check_batch(v, f"volume {i}")
        first = volumes[0]
        for i, v in enumerate(volumes[1:], start=1):
            if v.shape[0] != first.shape[0] or v.shape[2:] != first.shape[2:]:
                raise ValueError(f"volume {i} shape {tuple(v.shape)} does not match volume 0 shape {tuple(first.shape)} "
                                 "(batch and spatial sizes must agree)")
        modes = list(modes) if modes is not None else ["bilinear"] * len(volumes)
        if len(modes) != len(volumes):
            raise ValueError(f"modes: expecting one mode per volume ({len(volumes)}), got {len(modes)}")
        ddf = self.sample(first.shape[0], first.shape[2:], generator, first.device)
        out: list[torch.Tensor | None] = [None] * len(volumes)
        # One grid_sample per interpolation mode: the volumes are stacked along the channel axis.
        for mode in dict.fromkeys(modes):
            idx = [i for i, m in enumerate(modes) if m == mode]
            stacked = torch.cat([volumes[i].to(ddf.dtype) for i in idx], dim=1)
            warped = torch.split(warp(stacked, ddf, mode), [volumes[i].shape[1] for i in idx], dim=1)
            for i, w in zip(idx, warped):
                out[i] = w.to(volumes[i].dtype)
        return tuple(out)


@dataclass
class Views:
    """One training step's inputs: ``view_a`` = spatial(t'(x_A)), ``target_a`` = spatial(x_A), ``image_b`` = spatial(x_B)."""

    view_a: torch.Tensor
    target_a: torch.Tensor
    image_b: torch.Tensor


def make_views(x_a: torch.Tensor, x_b: torch.Tensor, appearance: AppearanceTransform,
               spatial: RandSpatialTransform, generator: torch.Generator) -> Views:
    """Corrupt x_A, then warp x_A, t'(x_A) and x_B by one shared random spatial transform."""
    _check_batch(x_a, "x_a")
    _check_batch(x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a shape {tuple(x_a.shape)} must equal x_b shape {tuple(x_b.shape)}")
    corrupted = appearance(x_a, generator)
    view_a, target_a, image_b = spatial(corrupted, x_a, x_b, generator=generator)
    return Views(view_a=view_a, target_a=target_a, image_b=image_b)


def time_augmentation(size: int = 128, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Median seconds of the spatial transform of three ``size``³ volumes and of the appearance transform of one."""
    generator = torch.Generator().manual_seed(seed)
    volumes = [torch.rand(1, 1, size, size, size, generator=generator) for _ in range(3)]
    spatial, appearance = RandSpatialTransform(), AppearanceTransform(1.0, 1.0, 1.0)

    def median_seconds(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    return {
        f"spatial_seconds_{size}": median_seconds(lambda: spatial(*volumes, generator=generator)),
        f"appearance_seconds_{size}": median_seconds(lambda: appearance(volumes[0], generator)),
    }
