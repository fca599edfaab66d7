"""Method options: the dataclasses of ``pretrain.options.<method>``, whose fields declare their valid values.

A field annotated ``Annotated[float, Bounds(...)]`` (or :data:`Probability`) is checked when the options
are built; a value out of bounds raises ``ValueError`` naming the field, which
:class:`~gvsl.methods.base.PretrainMethod` turns into a one-line :class:`~gvsl.errors.GVSLInputError`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Annotated

__all__ = ["Bounds", "MethodOptions", "NoOptions", "Probability"]


@dataclass(frozen=True)
class Bounds:
    """``low ≤ value ≤ high`` (``<`` at an open end; None: unbounded), a whole number if ``integer``.

    ``words`` replaces the range in the message; ``why`` adds the reason.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    words: str = ""
    why: str = ""

    def check(self, name: str, value: float) -> None:
        # written as "not (inside)" so that NaN fails every bound
        inside = int(value) == value if self.integer else True
        if self.low is not None:
            inside = inside and (value > self.low if self.open_low else value >= self.low)
        if self.high is not None:
            inside = inside and (value < self.high if self.open_high else value <= self.high)
        if not inside:
            why = f" ({self.why})" if self.why else ""
            raise ValueError(f"{name} must be {self._words()}{why}, got {value}")

    def _words(self) -> str:
        if self.words:
            return self.words
        if self.integer:
            return f"an integer >= {self.low:g}"
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


#: a probability in [0, 1]
Probability = Annotated[float, Bounds(0.0, 1.0, words="a probability in [0, 1]")]


@functools.cache
def _bounds(cls: type) -> tuple[tuple[str, Bounds], ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for f in dataclasses.fields(cls):
        found += [(f.name, meta) for meta in getattr(hints[f.name], "__metadata__", ()) if isinstance(meta, Bounds)]
    return tuple(found)


@dataclass
class MethodOptions:
    """Base of the options dataclasses: checks every field's :class:`Bounds` (in field order) when built."""

    def __post_init__(self):
        for name, bounds in _bounds(type(self)):
            bounds.check(name, getattr(self, name))


@dataclass
class NoOptions(MethodOptions):
    """A method without settings of its own."""
