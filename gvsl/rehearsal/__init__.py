"""A rehearsal of the paper profile: every stage it runs, on small stand-ins of its datasets.

``make rehearse-paper`` (``python -m gvsl.rehearsal``) does what a user of the paper profile does on
a fresh clone, as the README's "The paper profile" describes it, in a copy of the project:

1. one folder per dataset that the paper profile reads, written by :mod:`gvsl.rehearsal.stand_ins`
   in the dataset's own formats (MM-WHS NIfTI, ASOCA NRRD, STOIC MetaImage with ``reference.csv``,
   CANDI, a folder of unlabeled CT);
2. ``data/`` pointed at that folder with the README's commands (``dvc import-url``, ``dvc unfreeze``);
3. ``params.yaml`` = the resolved settings of ``profiles/paper.yaml`` with the overlay
   ``profiles/paper-rehearsal.yaml`` laid over it, which may change only sizes, iteration counts and widths
   (:data:`SHRINKABLE`);
4. ``dvc repro``, then a check that every Table 1 cell of the paper profile came out, from the
   paper's sources.

So a reader, split, label map, method or report path that breaks on the paper profile breaks here,
in minutes on a CPU, and not two days into a GPU run. ``--precision bf16`` (``make rehearse-paper
PRECISION=bf16``) sets ``precision`` of pre-training and transfer to bf16, so that the CPU runs every
stage under the bf16 autocast that the paper profile's ``auto`` means on CUDA; the CPU computes bf16
natively where :func:`gvsl.runtime.cpu_bf16_supported` says so (AVX512-BF16 or AMX), and emulates it,
slower, elsewhere. Reading ``.mha`` needs ITK (``pip install
'gvsl-kit[itk]'``; ``make rehearse-paper`` installs it from ``requirements-itk.lock``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Settings, compose, load_settings
from gvsl.pipeline.profile import fresh_folder, run_in_copy, update_mark
from gvsl.runtime import check_precision
from gvsl.settings import leaves, merge
from gvsl.table1 import PROTOCOLS

__all__ = ["OVERLAY", "PAPER", "SHRINKABLE", "changed_settings", "rehearsal_settings", "rehearse"]

PAPER = Path("profiles/paper.yaml")
OVERLAY = Path("profiles/paper-rehearsal.yaml")
#: the settings the overlay may change (dotted paths, ``*`` = any one key): sizes, iterations, widths
SHRINKABLE = (
    "prepare.tasks.*.spacing",
    "model.channels",
    "pretrain.iterations",
    "pretrain.crop",
    "pretrain.checkpoint_every",
    "pretrain.log_every",
    "pretrain.eval_every",
    "pretrain.heldout.pairs",
    "transfer.*.seeds",
    "transfer.*.fractions",
    "transfer.*.crop.*",
    "transfer.*.iterations",
    "transfer.*.iterations.*",
    "transfer.*.val_every",
    "transfer.*.min_iterations",
)


def changed_settings(paper: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted path -> (paper's value, ``params``'s value) of every setting in which the two differ."""
    before, after = leaves(paper), leaves(params)
    return {
        path: (before.get(path), after.get(path))
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    }


def _matches(path: str, pattern: str) -> bool:
    keys, parts = path.split("."), pattern.split(".")
    return len(keys) == len(parts) and all(part in ("*", key) for key, part in zip(keys, parts))


def _shrinks(path: str, before: Any, after: Any) -> bool:
    """Whether ``after`` is a size of ``before``'s kind: same type, and a list of the same length, so
    that the overlay cannot switch a code path (a crop to whole volumes, a network's depth)."""
    if not any(_matches(path, pattern) for pattern in SHRINKABLE):
        return False
    if before is None and path.startswith("prepare.tasks."):
        return True  # the paper profile leaves the voxel size at its default, 1 mm
    if path.endswith(".seeds"):  # fewer runs: the first of the paper's seeds
        return isinstance(after, list) and 0 < len(after) <= len(before) and after == before[: len(after)]
    if path.endswith(".fractions"):  # fewer label fractions: some of the paper's, all of the labels among them
        return isinstance(after, list) and 1.0 in after and set(after) <= set(before)
    if isinstance(before, bool) or type(before) is not type(after):
        return False
    return not isinstance(before, list) or len(before) == len(after)


def rehearsal_settings(project: Path, precision: str | None = None) -> Settings:
    """The paper profile with the overlay laid over it, refused if it changes more than :data:`SHRINKABLE`;
    with ``precision``, pre-training and every transfer protocol run at it (the summary lists that change)."""
    paper = load_settings(project / PAPER).to_mapping()
    params = load_settings(project / PAPER, [project / OVERLAY]).to_mapping()
    other = [
        path for path, (before, after) in changed_settings(paper, params).items() if not _shrinks(path, before, after)
    ]
    if other:
        raise GVSLInputError(
            f"{OVERLAY}: changes {other}, which are not sizes, iterations or widths of the "
            f"paper profile of the same kind (allowed: {', '.join(SHRINKABLE)})"
        )
    if precision is not None:
        check_precision(precision, "--precision")
        at = {"precision": precision}
        params = merge(params, {"pretrain": at, "transfer": {protocol: at for protocol in PROTOCOLS}})
    return compose(params, where=f"{OVERLAY} over {PAPER}")


def write_datasets(settings: Settings, folder: Path) -> None:
    """One stand-in per prepared task of the profile, in the folder its ``root`` names under ``data/``."""
    from gvsl.rehearsal.stand_ins import write_fixture

    for task, spec in settings.prepare.tasks.items():
        root = Path(spec["root"])
        if root.parts[0] != "data":
            raise GVSLInputError(
                f"prepare.tasks.{task}.root: {root} is not under data/, where the paper profile reads its datasets"
            )
        write_fixture(spec["source"], folder.joinpath(*root.parts[1:]), seed=settings.prepare.seed)


def check_outputs(project: Path, settings: Settings) -> dict[str, Any]:
    """Every Table 1 cell of the profile, each from its paper source; raises naming what is missing."""
    table = pd.read_csv(project / "results" / "table1.csv")
    expected = {(m, t, p) for m in settings.pipeline.methods for t in settings.pipeline.tasks for p in PROTOCOLS}
    found = set(zip(table["method"], table["task"], table["protocol"]))
    if expected - found:
        raise GVSLInputError(f"rehearsal: Table 1 lacks the cells {sorted(expected - found)}")
    if table["value"].isna().any():
        raise GVSLInputError(f"rehearsal: cells without a value: {table[table['value'].isna()].to_dict('records')}")
    sources = {}
    for task, spec in settings.prepare.tasks.items():
        info = json.loads((project / "build" / "prepared" / task / "dataset.json").read_text())
        if info["source"] != spec["source"]:
            raise GVSLInputError(f"rehearsal: build/prepared/{task} came from {info['source']}, not {spec['source']}")
        sources[task] = info["source"]
    return {"cells": len(found), "methods": sorted(set(table["method"])), "sources": sources}


def rehearse(dest: str | Path, source: str | Path | None = None, precision: str | None = None) -> dict[str, Any]:
    """Rehearse the paper profile of the project at ``source`` in ``dest`` (replaced if a rehearsal), at
    ``precision`` if given (:func:`rehearsal_settings`; the summary lists it among the changes from the paper).

    Returns what ran: the cells of Table 1, the methods, each task's source, the seconds taken; the
    same summary is written to ``dest/gvsl-profile-run.json``.
    """
    from gvsl.pipeline.layout import find_project

    source = find_project(None if source is None else Path(source))
    start = time.monotonic()
    dest = fresh_folder(Path(dest), "rehearsal")
    try:
        settings = rehearsal_settings(source, precision)
        write_datasets(settings, dest / "datasets")
        project = run_in_copy(source, dest, settings, dest / "datasets")
        paper = load_settings(source / PAPER).to_mapping()
        summary = {
            "status": "passed",
            **check_outputs(project, settings),
            "seconds": round(time.monotonic() - start, 1),
            "changed_from_paper": {
                path: list(values) for path, values in changed_settings(paper, settings.to_mapping()).items()
            },
        }
    except GVSLInputError as err:
        update_mark(dest, status="failed", error=str(err), source=str(source))
        raise GVSLInputError(f"rehearsal: {err}") from None
    update_mark(dest, **summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gvsl.rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=Path("build/rehearsal"),
        help="folder for the project copy, the stand-in datasets and the summary "
        "(default: build/rehearsal; an earlier rehearsal there is replaced)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="train and evaluate at this precision instead of the paper profile's auto (fp32 on "
        "the CPU); bf16 is native on CPUs with AVX512-BF16 or AMX",
    )
    args = parser.parse_args(argv)
    if args.precision == "bf16":
        from gvsl.runtime import cpu_bf16_supported

        if not cpu_bf16_supported():
            print(
                "rehearse-paper: this CPU has no native bf16 (avx512_bf16 or amx_bf16): PyTorch emulates it, slower",
                file=sys.stderr,
            )
    try:
        summary = rehearse(args.dest, precision=args.precision)
    except GVSLInputError as err:
        print(f"rehearse-paper: error: {err}", file=sys.stderr)
        return 2
    print(
        f"rehearse-paper: {summary['cells']} Table 1 cells of {len(summary['methods'])} methods from "
        f"{', '.join(f'{t}={s}' for t, s in summary['sources'].items())} in {summary['seconds']:.0f} s"
    )
    return 0
