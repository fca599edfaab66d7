"""Random draws on the generator's device, and the input checks the view transforms share.

All randomness of :mod:`gvsl.views` comes from an explicit ``torch.Generator`` (its state is
checkpointed, so a resumed run draws the same views); numbers are drawn on the generator's device and
moved to the data's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "check_non_negative",
    "check_probability",
    "check_range",
    "check_volume",
    "happens",
    "rand",
    "randint",
    "uniform",
]


def rand(generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """uniform[0, 1) numbers drawn on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device)


def uniform(generator: torch.Generator, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
    return rand(generator, shape) * (high - low) + low


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer in ``[low, high)``; callers guarantee ``high > low``."""
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device))


def happens(generator: torch.Generator, probability: float) -> bool:
    """One Bernoulli(probability) draw; always consumes one number so the stream does not depend on it."""
    return bool(rand(generator, (1,)) < probability)


def check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_range(name: str, value: Sequence[float], minimum: float) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"{name}: expecting a (low, high) pair, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name}: low must not exceed high, got ({low}, {high})")
    if low < minimum:
        raise ValueError(f"{name}: values must be >= {minimum}, got ({low}, {high})")
    return low, high


def check_volume(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expecting 5-D input (B, C, D, H, W), got {shape}")
