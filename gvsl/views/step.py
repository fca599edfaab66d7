"""One training step's views: x_A corrupted, then x_A, t'(x_A) and x_B moved by one spatial transform."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gvsl.views.appearance import AppearanceTransform
from gvsl.views.draws import check_volume
from gvsl.views.spatial import RandSpatialTransform

__all__ = ["Views", "make_views", "time_augmentation"]


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


def make_views(
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    appearance: AppearanceTransform,
    spatial: RandSpatialTransform,
    generator: torch.Generator,
) -> Views:
    """Corrupt x_A, then move x_A, t'(x_A) and x_B by one shared random spatial transform.

    Args:
        x_a, x_b: (B, C, D, H, W) floating-point intensities in [0, 1] of two different subjects; not modified.
        appearance: the corruption t'.
        spatial: the shared spatial transform.
        generator: source of all random draws (appearance first, then spatial).

    Returns:
        :class:`Views` of new tensors.
    """
    check_volume(x_a, "x_a")
    check_volume(x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b: expecting the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    corrupted = appearance(x_a, generator)
    view_a, target_a, image_b = spatial(corrupted, x_a, x_b, generator=generator)
    return Views(view_a=view_a, target_a=target_a, image_b=image_b)


def time_augmentation(
    size: int = 128, repeats: int = 3, device: str | torch.device = "cpu", seed: int = 0
) -> dict[str, float]:
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
