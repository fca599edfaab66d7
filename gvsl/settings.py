"""Typed settings: building a config dataclass from a mapping (``params.yaml`` group, checkpoint) strictly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from gvsl.errors import GVSLInputError

__all__ = ["from_mapping"]

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)``, refusing keys that are not fields of the dataclass ``cls`` (a typo is an error, not a
    default)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
        raise GVSLInputError(f"{where}: unknown settings {sorted(unknown)}; valid: {sorted(fields)}")
    return cls(**values)
