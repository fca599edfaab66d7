"""``gvsl pretrain``: pre-train one method on a prepared dataset folder."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS
from gvsl.nets import parse_channels
from gvsl.pretrain.config import LR_SCHEDULES, PretrainConfig
from gvsl.pretrain.engine import pretrain_prepared
from gvsl.pretrain.heldout import load_heldout
from gvsl.runtime import PRECISIONS

__all__ = ["add_arguments", "parse_options", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl pretrain``."""
    defaults = PretrainConfig()
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset folder (gvsl prepare)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder for checkpoint.pt, backbone.pt, dvclive/"
    )
    parser.add_argument(
        "--method",
        default=defaults.method,
        choices=list(PRETRAIN_METHODS),
        help="GVSL, an ablation or a baseline (see gvsl.methods)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the method, e.g. --option temperature=0.2 for simclr (repeatable; values are read as YAML)",
    )
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--crop", type=int, nargs=3, metavar=("D", "H", "W"), default=list(defaults.crop))
    parser.add_argument(
        "--crop-jitter",
        type=int,
        default=defaults.crop_jitter,
        help="largest shift (voxels) of x_B's crop against x_A's; default 0, the same position",
    )
    parser.add_argument("--channels", default=",".join(map(str, defaults.channels)), help="nine backbone widths")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lr-schedule", default=defaults.lr_schedule, choices=LR_SCHEDULES)
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="warm-up iterations (cosine schedule)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument(
        "--heldout",
        type=Path,
        help="prepared dataset whose --heldout-split subjects are "
        "evaluated on every --eval-every iterations (never trained on): the method's loss, "
        "and registration by a Z-matching head",
    )
    parser.add_argument("--heldout-split", default="val", help="split of --heldout (default val)")
    parser.add_argument("--heldout-pairs", type=int, default=20, help="ordered pairs of different subjects")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="auto (bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16",
    )
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
    config = PretrainConfig(
        method=args.method,
        options=parse_options(args.option),
        iterations=args.iterations,
        batch_size=args.batch_size,
        crop=tuple(args.crop),
        crop_jitter=args.crop_jitter,
        channels=parse_channels(args.channels),
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        warmup=args.warmup,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        eval_every=args.eval_every,
        device=args.device,
        precision=args.precision,
    )
    heldout = (
        load_heldout(args.heldout, args.heldout_split, config.crop, args.heldout_pairs)
        if args.heldout is not None
        else None
    )
    result = pretrain_prepared(args.data, args.out, config, resume=args.resume, heldout=heldout)
    print(f"wrote {result.backbone} ({result.iterations} iterations, {result.steps_per_second:.2f} steps/s)")
    return 0
