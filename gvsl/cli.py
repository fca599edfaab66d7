"""The ``gvsl`` command line. Each sub-command lives in the module that does the work.

A command module provides ``add_arguments(parser)`` and ``run(args) -> int``. Expected input errors
are raised as :class:`gvsl.errors.GVSLInputError` and end the command with one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gvsl.errors import GVSLInputError
from gvsl.nets.unet import parse_channels  # noqa: F401  re-exported: commands' callers import it from here

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("gvsl.data.prepare", "build a prepared dataset from a generated cohort or real data"),
    "pretrain": (
        "gvsl.pretrain",
        "pre-train GVSL, one of its ablations or a baseline (Models Genesis, SimCLR, BYOL, …; see gvsl.methods)",
    ),
    "transfer": ("gvsl.transfer", "train and test a transfer protocol (linear or fine-tune)"),
    "export": ("gvsl.export", "write a pre-trained backbone as a MONAI Bundle"),
    "settings": ("gvsl.pipeline.config", "print the pipeline's settings: a profile laid over the paper's defaults"),
    "plan": ("gvsl.plan", "estimate jobs, device-hours, memory and wall time of a pipeline run before it starts"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gvsl", description="Geometric Visual Similarity Learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except GVSLInputError as err:
        print(f"gvsl {args.command}: error: {err}", file=sys.stderr)
        return 2
