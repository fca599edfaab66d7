"""Method options: the dataclasses of ``pretrain.options.<method>``, whose fields declare their valid values.

They are :class:`gvsl.settings.Checked` settings: a field annotated ``Annotated[float, Bounds(...)]``
(or :data:`Probability`) is checked when the options are built, and a value out of bounds raises a
one-line error naming the field, which :class:`~gvsl.methods.base.PretrainMethod` prefixes with the method.
"""

from __future__ import annotations

from dataclasses import dataclass

from gvsl.settings import Bounds, Checked, OneOf, Probability

__all__ = ["Bounds", "MethodOptions", "NoOptions", "OneOf", "Probability"]


@dataclass
class MethodOptions(Checked):
    """Base of the options dataclasses: checks every field's :class:`Bounds` (in field order) when built."""


@dataclass
class NoOptions(MethodOptions):
    """A method without settings of its own."""
