"""``gvsl prepare``: turn a data source into prepared datasets (:mod:`gvsl.data.dataset`).

One call prepares one task into ``--out``. The generated thorax source ``phantom-ct`` without
``--task`` prepares all four of its tasks at once, into ``OUT/pretrain``, ``OUT/SHC``, ``OUT/SAC`` and
``OUT/CCC`` (the default profile's whole data side in one command). Outputs are written
atomically: a failed run leaves no trace, and an existing non-empty ``--out`` is refused unless
``--overwrite`` is given, in which case it is replaced only after the new output is complete.

Examples::

    gvsl prepare --source phantom-ct --out prepared            # default profile, all four tasks
    gvsl prepare --source mmwhs --root data --out prepared/SHC  # paper profile, MM-WHS CT
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from gvsl.data.dataset import atomic_output
from gvsl.data.sources import SOURCES, PrepareRequest, source_spec
from gvsl.settings import add_flags, from_flags

__all__ = ["add_arguments", "prepare", "prepare_request", "run"]


def prepare(
    source: str,
    out: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    **settings: Any,
) -> Path:
    """Prepare ``source`` into the folder ``out``.

    Args:
        source: one of :data:`gvsl.data.sources.SOURCES` (``phantom-ct``, ``mni-brain``, ``mmwhs``,
            ``asoca``, ``stoic``, ``candi``, ``msd``, ``folder``).
        out: output folder (one dataset, or one sub-folder per task for ``phantom-ct`` without ``task``).
        root: input folder of a real dataset; searched recursively.
        overwrite: replace an existing non-empty ``out``.
        **settings: the other fields of :class:`~gvsl.data.sources.PrepareRequest` (``task``,
            ``subjects``, ``shape``, ``spacing``, ``seed``, ``window_offset``, ``roi_mm``, ``modality``,
            ``progress``).

    Returns:
        ``out`` as a Path.

    Raises:
        GVSLInputError: unknown source/task, missing or superfluous ``root``, bad files (named).
    """
    return prepare_request(PrepareRequest(source=source, root=root, **settings), out, overwrite=overwrite)


def prepare_request(request: PrepareRequest, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Prepare what ``request`` asks for into the folder ``out`` (written atomically; see :func:`prepare`)."""
    spec = source_spec(request)
    all_tasks = request.task is None and len(spec.tasks) > 1 and spec.generated
    tasks = spec.tasks if all_tasks else (request.task or spec.tasks[0],)
    with atomic_output(out, overwrite=overwrite) as tmp:
        for one in tasks:
            spec.build(tmp / one if all_tasks else tmp, request, one)
    return Path(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl prepare``."""
    sources = "; ".join(f"{name}: {spec.help}" for name, spec in SOURCES.items())
    parser.add_argument("--source", required=True, choices=list(SOURCES), help=f"data source ({sources})")
    parser.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    parser.add_argument(
        "--task",
        choices=sorted({t for s in SOURCES.values() for t in s.tasks}),
        help="task to prepare (default: the source's task; phantom-ct: all four in sub-folders)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="target voxel size in mm, one or three numbers (real data default: 1)",
    )
    add_flags(parser, PrepareRequest, skip=("source", "task", "spacing", "progress"))
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --out once the new one is complete"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning (scaled splits, skipped files), like the CLI's error lines; no source excerpt.
    print(f"gvsl prepare: warning: {message}", file=sys.stderr if file is None else file)


def run(args: argparse.Namespace) -> int:
    """Run ``gvsl prepare``; prints the output folder."""
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        request = from_flags(PrepareRequest, args, progress=not args.quiet)
        out = prepare_request(request, args.out, overwrite=args.overwrite)
    print(f"prepared {args.source} into {out}")
    return 0
