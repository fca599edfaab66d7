"""Typed settings: dataclasses whose fields declare their types and valid values, built strictly.

Every group of settings in the kit (``params.yaml``'s groups, one pre-training or transfer run, a method's
options) is a :class:`Checked` dataclass. A field's annotation says what it holds (``int``,
``tuple[int, int, int]``, ``dict[str, int] | None``, another :class:`Checked` group…) and, through
``Annotated`` metadata, what values are valid: :class:`Bounds` for numbers, :class:`OneOf` for names.
Building one converts YAML's lists to tuples and nested mappings to their groups, and refuses a
value of the wrong type or out of bounds with a one-line :class:`~gvsl.errors.GVSLInputError` naming
the field. So a setting's type, default, valid values and documentation sit on one line of one class.

:func:`from_mapping` builds a group from a mapping and refuses unknown keys; :func:`merge` lays a
profile's overlay over a mapping; :func:`add_flags` generates a command's flags from a group's fields,
their help from the group's docstring.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from gvsl.errors import GVSLInputError

__all__ = [
    "FINITE",
    "Bounds",
    "Checked",
    "OneOf",
    "Probability",
    "add_flags",
    "field_docs",
    "from_flags",
    "from_mapping",
    "leaves",
    "merge",
    "to_mapping",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """``low ≤ value ≤ high`` (``<`` at an open end; None: unbounded), a whole number if ``integer``.

    Applies to every number of a list, tuple or mapping value, and passes None (a field that may be
    None says so in its type). ``also`` names words allowed instead of a number (``auto``); ``words``
    replaces the range in the message; ``why`` adds the reason.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    also: tuple[str, ...] = ()
    words: str = ""
    why: str = ""

    def check(self, name: str, value: Any) -> None:
        if value is None or (isinstance(value, str) and value in self.also):
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.check(f"{name}.{key}", item)
            return
        if isinstance(value, (list, tuple)):
            for item in value:
                self.check(name, item)
            return
        # each test asks "inside?", so that NaN fails every bound
        inside = isinstance(value, (int, float)) and not isinstance(value, bool)
        if inside and self.integer:
            inside = math.isfinite(value) and int(value) == value
        if inside and self.low is not None:
            inside = value > self.low if self.open_low else value >= self.low
        if inside and self.high is not None:
            inside = value < self.high if self.open_high else value <= self.high
        if not inside:
            why = f" ({self.why})" if self.why else ""
            raise GVSLInputError(f"{name} must be {self._words()}{why}, got {value!r}")

    def _words(self) -> str:
        if self.words:
            return self.words
        if self.low is None and self.high is None:
            text = "an integer" if self.integer else "a number"
        elif self.integer and self.high is None:
            text = f"an integer {'>' if self.open_low else '>='} {self.low:g}"
        elif self.high is None:
            text = f"{'>' if self.open_low else '>='} {self.low:g}"
        else:
            low = "-inf" if self.low is None else f"{self.low:g}"
            text = f"in {'(' if self.open_low else '['}{low}, {self.high:g}{')' if self.open_high else ']'}"
        return text + "".join(f" or {word!r}" for word in self.also)


@dataclass(frozen=True)
class OneOf:
    """One of ``values`` (every item of a list or tuple value; None passes, as for :class:`Bounds`)."""

    values: tuple[Any, ...]

    def check(self, name: str, value: Any) -> None:
        if value is None:
            return
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item not in self.values:
                raise GVSLInputError(f"{name}: unknown {item!r}; valid: {list(self.values)}")


#: a probability in [0, 1]
Probability = Annotated[float, Bounds(0.0, 1.0, words="a probability in [0, 1]")]
#: the bounds of a finite number
FINITE = Bounds(-math.inf, math.inf, open_low=True, open_high=True, words="a finite number")


class Checked:
    """Base of the settings dataclasses (frozen or not): when built, every field is converted to its annotated type and
    checked against its :class:`Bounds` and :class:`OneOf` (in field order). Subclasses with checks that
    span fields add them in ``__post_init__`` after calling this one."""

    def __post_init__(self):
        for name, hint, checks in _field_specs(type(self)):
            value = _convert(getattr(self, name), hint, name)
            for check in checks:
                check.check(name, value)
            object.__setattr__(self, name, value)  # frozen subclasses too


@functools.cache
def _field_specs(cls: type) -> tuple[tuple[str, Any, tuple[Any, ...]], ...]:
    """(name, type without metadata, checks) of each field of ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        checks: tuple[Any, ...] = ()
        if typing.get_origin(hint) is Annotated:
            checks = tuple(m for m in hint.__metadata__ if isinstance(m, (Bounds, OneOf)))
            hint = hint.__origin__
        specs.append((f.name, hint, checks))
    return tuple(specs)


_SINGULAR = {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path"}
_PLURAL = {int: "integers", float: "numbers", bool: "true/false values", str: "texts", Path: "paths"}


def _type_words(hint: Any, plural: bool = False) -> str:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _type_words(hint.__origin__, plural)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(arg, plural) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_words(args[0], plural=True)}"
        return f"a list of {len(args)} {_type_words(args[0], plural=True)}"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    if hint is type(None):
        return "null"
    return (_PLURAL if plural else _SINGULAR).get(hint, getattr(hint, "__name__", str(hint)))


def _convert(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the type ``hint`` says (lists as tuples, mappings as groups), or a GVSLInputError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin is Annotated:
        return _convert(value, hint.__origin__, name)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        groups = [a for a in args if isinstance(a, type) and issubclass(a, Checked)]
        if isinstance(value, Mapping) and len(groups) == 1:
            return _convert(value, groups[0], name)  # the group's own error says what is wrong inside it
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, name)
            except GVSLInputError:
                continue
        raise GVSLInputError(f"{name} must be {_type_words(hint)}, got {value!r}")
    if isinstance(hint, type) and issubclass(hint, Checked):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise GVSLInputError(f"{name} must be a mapping of settings, got {value!r}")
        try:
            return _build(hint, value)
        except GVSLInputError as err:
            raise GVSLInputError(_within(name, hint, str(err))) from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GVSLInputError(f"{name} must be {_type_words(hint)}, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(value) != len(items):
            raise GVSLInputError(f"{name} must be {_type_words(hint)}, got {value!r}")
        try:
            return tuple(_convert(item, arg, name) for item, arg in zip(value, items))
        except GVSLInputError:  # an item of the wrong type: the message shows the whole list
            raise GVSLInputError(f"{name} must be {_type_words(hint)}, got {value!r}") from None
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise GVSLInputError(f"{name} must be a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {_convert(k, key_type, f"{name} keys"): _convert(v, value_type, f"{name}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise GVSLInputError(f"{name} must be a list, got {value!r}")
        return [_convert(item, args[0] if args else Any, name) for item in value]
    return _scalar(value, hint, name)


def _scalar(value: Any, hint: Any, name: str) -> Any:
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint is Path and isinstance(value, (str, Path)):
        return Path(value)
    if hint is type(None) and value is None:
        return None
    raise GVSLInputError(f"{name} must be {_type_words(hint)}, got {value!r}")


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(values) - fields
    if unknown:
        raise GVSLInputError(f"unknown settings {sorted(unknown)}; valid: {sorted(fields)}")
    return cls(**values)


def _within(name: str, cls: type, message: str) -> str:
    """``message`` of the group ``cls`` as the group ``name`` says it: a field's dotted path (``pretrain.lr must
    be …``), or the group's name before what it says of itself."""
    first = re.match(r"\w+", message)
    fields = {f.name for f in dataclasses.fields(cls)}
    return f"{name}.{message}" if first and first.group(0) in fields else f"{name}: {message}"


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)``, refusing keys that are not fields of the dataclass ``cls`` (a typo is an error, not a
    default); an invalid value's error names its dotted key after ``where``."""
    if not isinstance(values, Mapping):
        raise GVSLInputError(f"{where} must be a mapping of settings, got {values!r}")
    try:
        return _build(cls, values)
    except GVSLInputError as err:
        raise GVSLInputError(f"{where}: {err}") from None


def to_mapping(settings: Any) -> Any:
    """A settings dataclass (or a value inside one) as plain YAML/JSON data: groups as dicts, tuples as lists."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: to_mapping(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, Mapping):
        return {key: to_mapping(value) for key, value in settings.items()}
    if isinstance(settings, (list, tuple)):
        return [to_mapping(value) for value in settings]
    if isinstance(settings, Path):
        return str(settings)
    return settings


def merge(
    base: Mapping[str, Any], overlay: Mapping[str, Any], replace_when_changed: Sequence[str] = ()
) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it: mappings merge key by key, anything else is replaced.

    A mapping of ``overlay`` that gives one of the keys ``replace_when_changed`` a new value replaces its
    counterpart whole (a new ``source`` makes the old source's settings meaningless).
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        below = merged.get(key)
        replaced = (
            isinstance(below, Mapping)
            and isinstance(value, Mapping)
            and any(name in value and value[name] != below.get(name) for name in replace_when_changed)
        )
        if isinstance(value, Mapping) and isinstance(below, Mapping) and not replaced:
            merged[key] = merge(below, value, replace_when_changed)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path → value of every setting of a nested mapping (an empty mapping is a leaf)."""
    found: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            found.update(leaves(value, f"{path}."))
        else:
            found[path] = value
    return found


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's text in the ``Args:`` (or ``Attributes:``) sections of ``cls``'s and its bases' docstrings
    (Google style; ``a, b: text`` documents both)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        section = re.split(r"\n\s*(?:Args|Attributes):\s*\n", klass.__doc__ or "", maxsplit=1)
        if len(section) < 2:
            continue
        name = None
        for line in section[1].splitlines():
            entry = re.match(r"\s{4,8}([\w, ]+):\s+(.*)", line)
            if entry and not line.startswith(" " * 12):
                name = [part.strip() for part in entry.group(1).split(",")]
                for each in name:
                    docs[each] = entry.group(2).strip()
            elif name and line.strip():
                for each in name:
                    docs[each] += " " + line.strip()
            elif not line.strip():
                name = None
    return docs


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = (), prefix: str = "") -> None:
    """One flag per field of the settings dataclass ``cls`` (but ``skip``): ``--crop-jitter`` for
    ``crop_jitter`` (``--<prefix>-crop-jitter`` with a ``prefix``), typed and with its valid names as the field
    declares them, its help from the class's docstring and its default from the field; a field without a
    default is a required flag. An absent flag leaves the field's default to the class."""
    docs = field_docs(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    for name, hint, checks in _field_specs(cls):
        if name in skip:
            continue
        dest = f"{prefix}_{name}" if prefix else name
        flag, kwargs = "--" + dest.replace("_", "-"), _flag_kwargs(hint, checks)
        shown = defaults.get(name, dataclasses.MISSING)
        help_text = _plain(docs.get(name, "")).replace("%", "%%")
        if shown is not dataclasses.MISSING and shown is not None:
            shown = " ".join(map(str, shown)) if isinstance(shown, tuple) else shown
            help_text = f"{help_text} (default: {shown})".strip()
        required = shown is dataclasses.MISSING and not any(
            f.name == name and f.default_factory is not dataclasses.MISSING for f in dataclasses.fields(cls)
        )
        parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help_text, required=required, **kwargs)


def _plain(text: str) -> str:
    """Docstring markup as a terminal shows it: ``:mod:`gvsl.x``` and ````x```` as x."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").rstrip(".")


def _flag_kwargs(hint: Any, checks: tuple[Any, ...]) -> dict[str, Any]:
    choices = next((list(c.values) for c in checks if isinstance(c, OneOf)), None)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        return _flag_kwargs(next(a for a in args if a is not type(None)), checks)  # absent: None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple and args and args[-1] is not Ellipsis:
        return {"type": args[0], "nargs": len(args), **({"metavar": ("D", "H", "W")} if len(args) == 3 else {})}
    if origin is tuple:
        # "8,16,32" or "8 16 32": widths are written both ways
        return {"type": _number_list(args[0]), "nargs": "+", "action": _Flatten}
    if hint in (int, float, str, Path):
        # the valid names in the usage, but checked by the settings: a bad one is then the one-line error
        # of every other bad value, not argparse's usage text
        return {"type": hint, **({"metavar": "{" + ",".join(map(str, choices)) + "}"} if choices else {})}
    # anything else (a mapping, a union of kinds) is given as YAML, as params.yaml would hold it
    return {"type": _yaml_value, "metavar": "YAML"}


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not a YAML value: {text!r}") from None


def _number_list(kind: type):
    def parse(text: str) -> list:
        parts = [part for part in text.split(",") if part]
        try:
            return [kind(part) for part in parts]
        except ValueError:
            return parts  # the settings refuse them with a one-line error naming the field

    return parse


class _Flatten(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [item for group in values for item in group])


def from_flags(cls: type[T], args: argparse.Namespace, prefix: str = "", **fixed: Any) -> T:
    """The settings of ``cls`` that :func:`add_flags` parsed into ``args`` (absent flags: the defaults),
    with ``fixed`` values set by the command."""
    names = {(f"{prefix}_{f.name}" if prefix else f.name): f.name for f in dataclasses.fields(cls)}
    given = {names[dest]: value for dest, value in vars(args).items() if dest in names}
    try:
        return _build(cls, {**given, **fixed})
    except GVSLInputError as err:
        raise GVSLInputError(_within(prefix, cls, str(err)) if prefix else str(err)) from None
