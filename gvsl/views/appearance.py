"""The appearance corruption t' of x_A: Models-Genesis local pixel shuffling, a Bézier intensity curve,
in-painting and out-painting.

Every transform returns new tensors and never writes into its input (MONAI's ``RandCoarseShuffle`` and
``RandCoarseDropout`` do, which would corrupt the restoration target as well).

Adapted from: Zhou et al., "Models Genesis", MedIA 2021; the GVSL authors' ``utils/Transform_self.py``
(ranges, order of the transforms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from gvsl.views.draws import check_probability, check_range, check_volume, happens, rand, randint

__all__ = ["AppearanceTransform", "bezier_intensity_curve", "bezier_intensity_map"]

# Models Genesis adds each further in-painting (and out-painting) box with this probability.
_ANOTHER_BOX_PROB = 0.95
# Painted boxes keep this many voxels away from the border (Models Genesis), where the volume allows.
_BOX_MARGIN = 3


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


def bezier_intensity_map(
    image: torch.Tensor, points: torch.Tensor, samples: int = 1001, decreasing: bool = False
) -> torch.Tensor:
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


def _random_box(
    spatial: Sequence[int], size_bounds: Callable[[int], tuple[int, int]], generator: torch.Generator
) -> tuple[slice, ...]:
    """One axis-aligned box: per axis a size in ``size_bounds(axis_size)`` = [low, high), placed at random
    at least ``_BOX_MARGIN`` voxels from the border where the axis is long enough."""
    box = []
    for size in spatial:
        low, high = size_bounds(size)
        low = min(max(1, low), size)
        extent = min(size, randint(generator, low, max(low + 1, high)))
        margin = min(_BOX_MARGIN, (size - extent) // 2)
        start = randint(generator, margin, max(margin + 1, size - extent - margin))
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

    def __init__(
        self,
        local_shuffle_prob: float = 0.8,
        nonlinear_prob: float = 0.9,
        inpaint_prob: float = 0.9,
        outpaint_prob: float = 0.0,
        max_inpaint_blocks: int = 30,
        shuffle_fraction: float = 0.4,
        inpaint_sides: Sequence[float] = (0.1, 0.2),
        invert_prob: float = 0.0,
    ):
        self.local_shuffle_prob = check_probability("local_shuffle_prob", local_shuffle_prob)
        self.nonlinear_prob = check_probability("nonlinear_prob", nonlinear_prob)
        self.inpaint_prob = check_probability("inpaint_prob", inpaint_prob)
        self.outpaint_prob = check_probability("outpaint_prob", outpaint_prob)
        self.shuffle_fraction = check_probability("shuffle_fraction", shuffle_fraction)
        if int(max_inpaint_blocks) != max_inpaint_blocks or max_inpaint_blocks < 0:
            raise ValueError(f"max_inpaint_blocks must be an integer >= 0, got {max_inpaint_blocks}")
        self.max_inpaint_blocks = int(max_inpaint_blocks)
        low, high = check_range("inpaint_sides", inpaint_sides, minimum=0.0)
        if high > 1:
            raise ValueError(f"inpaint_sides must be fractions of an axis in [0, 1], got {tuple(inpaint_sides)}")
        self.inpaint_sides = (low, high)
        self.invert_prob = check_probability("invert_prob", invert_prob)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Corrupt every sample of ``image`` independently.

        Args:
            image: (B, C, D, H, W) floating-point intensities in [0, 1]; not modified.
            generator: source of all random draws.

        Returns:
            New (B, C, D, H, W) tensor of ``image``'s dtype and device.
        """
        check_volume(image, "image")
        if not image.is_floating_point():
            raise ValueError(f"image: expecting floating-point intensities in [0, 1], got dtype {image.dtype}")
        return torch.stack([self._corrupt(sample, generator) for sample in image])

    def _corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """t' of one (C, D, H, W) sample. Each step returns a new tensor; a copy is made when none runs."""
        out = x
        if happens(generator, self.local_shuffle_prob):
            out = self.local_pixel_shuffle(out, generator)
        if happens(generator, self.nonlinear_prob):
            points = rand(generator, (2, 2))
            out = bezier_intensity_map(
                out, points, decreasing=bool(self.invert_prob) and happens(generator, self.invert_prob)
            )
        if happens(generator, self.outpaint_prob):
            out = self.outpaint(out, generator)
        elif happens(generator, self.inpaint_prob):
            out = self.inpaint(out, generator)
        return out.clone() if out is x else out

    def local_pixel_shuffle(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Permute the voxels inside a random ``shuffle_fraction`` of the blocks tiling a (C, D, H, W) volume.

        All channels of a voxel move together. Voxels in the partial blocks at the borders stay put.
        """
        channels, *spatial = x.shape
        block = [max(2, size // 20) for size in spatial]
        offset = [randint(generator, 0, side) for side in block]
        counts = [(size - start) // side for size, start, side in zip(spatial, offset, block)]
        out = x.clone()
        if min(counts) == 0:  # the volume is smaller than one block along some axis
            return out
        region = (slice(None), *(slice(start, start + n * side) for start, n, side in zip(offset, counts, block)))
        # (C, nD, bD, nH, bH, nW, bW) -> (C, blocks, voxels per block)
        tiles = out[region].reshape(channels, counts[0], block[0], counts[1], block[1], counts[2], block[2])
        tiles = tiles.permute(0, 1, 3, 5, 2, 4, 6).reshape(channels, math.prod(counts), math.prod(block))
        chosen = torch.nonzero(rand(generator, (tiles.shape[1],)) < self.shuffle_fraction).squeeze(1)
        order = rand(generator, (chosen.numel(), tiles.shape[2])).argsort(dim=1)
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
        while len(boxes) < self.max_inpaint_blocks and happens(generator, _ANOTHER_BOX_PROB):
            boxes.append(_random_box(spatial_shape, lambda size: _side_bounds(size, self.inpaint_sides), generator))
        return boxes

    def inpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill the boxes of :meth:`sample_inpaint_boxes` of a (C, D, H, W) volume with uniform[0, 1) noise."""
        channels, *spatial = x.shape
        out = x.clone()
        for box in self.sample_inpaint_boxes(spatial, generator):
            noise = rand(generator, [channels] + [s.stop - s.start for s in box])
            out[(slice(None), *box)] = noise.to(out)
        return out

    def sample_outpaint_boxes(
        self, spatial_shape: Sequence[int], generator: torch.Generator
    ) -> list[tuple[slice, ...]]:
        """The boxes that :meth:`outpaint` keeps: one, plus up to four more each with probability 0.95."""
        boxes = [_random_box(spatial_shape, _outpaint_size, generator)]
        while len(boxes) < 5 and happens(generator, _ANOTHER_BOX_PROB):
            boxes.append(_random_box(spatial_shape, _outpaint_size, generator))
        return boxes

    def outpaint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Keep the boxes of :meth:`sample_outpaint_boxes` of a (C, D, H, W) volume; uniform[0, 1) noise elsewhere."""
        boxes = self.sample_outpaint_boxes(x.shape[1:], generator)
        out = rand(generator, x.shape).to(x)
        for box in boxes:
            region = (slice(None), *box)
            out[region] = x[region]
        return out
