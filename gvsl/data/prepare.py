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
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from gvsl.data.dataset import atomic_output
from gvsl.data.sources import SOURCES, PrepareRequest
from gvsl.errors import GVSLInputError

__all__ = ["add_arguments", "prepare", "run"]

MODALITIES = ("ct", "mr")


def _triple(name: str, values: Sequence[float] | float | None, kind: type) -> tuple | None:
    if values is None:
        return None
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise GVSLInputError(f"{name}: expecting one or three positive numbers, got {values}")
    return tuple(kind(v) for v in values)


def prepare(source: str, out: str | os.PathLike, root: str | os.PathLike | None = None, *,
            task: str | None = None, subjects: int | None = None, shape: Sequence[int] | None = None,
            spacing: Sequence[float] | float | None = None, seed: int = 0, window_offset: float | None = None,
            roi_mm: Sequence[float] | None = None, modality: str | None = None, overwrite: bool = False,
            progress: bool = False) -> Path:
    """Prepare ``source`` into the folder ``out``.

    Args:
        source: one of :data:`gvsl.data.sources.SOURCES` (``phantom-ct``, ``mni-brain``, ``mmwhs``,
            ``asoca``, ``stoic``, ``candi``, ``msd``, ``folder``).
        out: output folder (one dataset, or one sub-folder per task for ``phantom-ct`` without ``task``).
        root: input folder of a real dataset; searched recursively.
        task: task key; defaults to the source's only task (``msd``: ``MSD``; ``phantom-ct``: all four).
        subjects: generated sources: cases per task, split in the default proportions; real
            sources: prepare a seeded subset of this many cases.
        shape: generated volume shape (D, H, W), generated sources only.
        spacing: target voxel size in mm (one number or three); real data default 1 mm³.
        seed: base seed of generated subjects and of the splits.
        window_offset: CT window offset added to HU (default 1024; see :mod:`gvsl.data.preprocess`).
        roi_mm: ROI size (mm) replacing the task's default.
        modality: ``ct`` or ``mr`` for ``folder`` (default ``ct``) and ``msd`` (default: its dataset.json).
        overwrite: replace an existing non-empty ``out``.
        progress: show progress bars.

    Returns:
        ``out`` as a Path.

    Raises:
        GVSLInputError: unknown source/task, missing or superfluous ``root``, bad files (named).
    """
    if source not in SOURCES:
        raise GVSLInputError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    spec = SOURCES[source]
    if task is not None and task not in spec.tasks:
        raise GVSLInputError(f"source {source} prepares task {' or '.join(spec.tasks)}, not {task!r}")
    if spec.generated and root is not None:
        raise GVSLInputError(f"source {source} is generated and reads no --root")
    if not spec.generated:
        if root is None:
            raise GVSLInputError(f"source {source} needs --root, the folder holding the dataset")
        if shape is not None:
            raise GVSLInputError(f"--shape applies to generated sources only, not to {source}")
    if modality is not None and modality not in MODALITIES:
        raise GVSLInputError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
    if subjects is not None and subjects < 1:
        raise GVSLInputError(f"subjects must be >= 1, got {subjects}")
    if seed < 0:
        raise GVSLInputError(f"seed must be >= 0, got {seed}")
    if window_offset is not None and not math.isfinite(window_offset):
        raise GVSLInputError(f"window offset must be a finite number of HU, got {window_offset}")
    request = PrepareRequest(source=source, root=Path(root) if root is not None else None, subjects=subjects,
                             shape=_triple("shape", shape, int), spacing=_triple("spacing", spacing, float),
                             seed=int(seed), window_offset=window_offset, roi_mm=_triple("roi", roi_mm, float),
                             modality=modality, progress=progress)
    all_tasks = task is None and len(spec.tasks) > 1 and spec.generated
    tasks = spec.tasks if all_tasks else (task or spec.tasks[0],)
    with atomic_output(out, overwrite=overwrite) as tmp:
        for one in tasks:
            spec.build(tmp / one if all_tasks else tmp, request, one)
    return Path(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl prepare``."""
    sources = "; ".join(f"{name}: {spec.help}" for name, spec in SOURCES.items())
    parser.add_argument("--source", required=True, choices=list(SOURCES), help=f"data source ({sources})")
    parser.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    parser.add_argument("--root", type=Path, help="folder holding a real dataset (searched recursively)")
    parser.add_argument("--task", choices=sorted({t for s in SOURCES.values() for t in s.tasks}),
                        help="task to prepare (default: the source's task; phantom-ct: all four in sub-folders)")
    parser.add_argument("--subjects", type=int, help="generated: cases per task; real: seeded subset size")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="generated volume shape")
    parser.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                        help="target voxel size in mm, one or three numbers (real data default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of subjects and splits (default 0)")
    parser.add_argument("--window-offset", type=float,
                        help="CT window: clip(HU + offset, 0, 2048) / 2048 (default offset 1024)")
    parser.add_argument("--roi", type=float, nargs=3, metavar="MM", help="ROI size in mm (default: per task)")
    parser.add_argument("--modality", choices=MODALITIES, help="ct or mr, for the folder and msd sources")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out once the new one is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning (scaled splits, skipped files), like the CLI's error lines; no source excerpt.
    print(f"gvsl prepare: warning: {message}", file=sys.stderr if file is None else file)


def run(args: argparse.Namespace) -> int:
    """Run ``gvsl prepare``; prints the output folder."""
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        out = prepare(args.source, args.out, args.root, task=args.task, subjects=args.subjects, shape=args.shape,
                      spacing=args.spacing, seed=args.seed, window_offset=args.window_offset, roi_mm=args.roi,
                      modality=args.modality, overwrite=args.overwrite, progress=not args.quiet)
    print(f"prepared {args.source} into {out}")
    return 0
