"""``gvsl pretrain``: pre-train one method on a prepared dataset folder."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.pretrain.config import PretrainConfig
from gvsl.pretrain.engine import pretrain_prepared
from gvsl.pretrain.heldout import HeldoutSettings, load_heldout
from gvsl.settings import add_flags, from_flags

__all__ = ["add_arguments", "parse_options", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl pretrain``: one per setting of :class:`~gvsl.pretrain.config.PretrainConfig`, and the
    data, the output and the held-out pairs."""
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset folder (gvsl prepare)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder for checkpoint.pt, backbone.pt, dvclive/"
    )
    add_flags(parser, PretrainConfig, skip=("options",))
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the method, e.g. --option temperature=0.2 for simclr (repeatable; values are read as YAML)",
    )
    parser.add_argument(
        "--heldout",
        type=Path,
        help="prepared dataset whose --heldout-split subjects are "
        "evaluated on every --eval-every iterations (never trained on): the method's loss, "
        "and registration by a Z-matching head",
    )
    add_flags(parser, HeldoutSettings, skip=("task",), prefix="heldout")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", …]`` → ``{key: YAML value}`` (``--option``)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise GVSLInputError(f"--option: expecting KEY=VALUE, got {pair!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise GVSLInputError(f"--option {key}: unreadable value {value!r} ({error})") from None
    return options


def run(args: argparse.Namespace) -> int:
    """Run ``gvsl pretrain``; prints the backbone written."""
    config = from_flags(PretrainConfig, args, options=parse_options(args.option))
    heldout = None
    if args.heldout is not None:
        pairs = from_flags(HeldoutSettings, args, prefix="heldout")
        heldout = load_heldout(args.heldout, pairs.split, config.crop, pairs.pairs)
    result = pretrain_prepared(args.data, args.out, config, resume=args.resume, heldout=heldout)
    print(f"wrote {result.backbone} ({result.iterations} iterations, {result.steps_per_second:.2f} steps/s)")
    return 0
