"""What ``gvsl prepare`` is asked for: one typed config from the CLI flags, :func:`gvsl.data.prepare.prepare`'s
arguments or ``params.yaml`` (``prepare.tasks.<TASK>``), checked once for all three."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from gvsl.data.preprocess import DEFAULT_HU_OFFSET
from gvsl.errors import GVSLInputError
from gvsl.settings import FINITE, Bounds, Checked, OneOf

__all__ = ["MODALITIES", "PrepareRequest"]

MODALITIES = ("ct", "mr")
# set by the stage (its task, ``prepare.seed``, the terminal), not by ``prepare.tasks.<TASK>``
_STAGE_FIELDS = ("task", "seed", "progress")


def _triple(values: Any) -> Any:
    """One number as three (a size or spacing given once for every axis); anything else as it is."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return (values,) * 3
    if isinstance(values, (list, tuple)) and len(values) == 1:
        return tuple(values) * 3
    return values


Positive = Bounds(0.0, math.inf, open_low=True, open_high=True, words="positive")


@dataclass
class PrepareRequest(Checked):
    """One ``gvsl prepare`` run; invalid settings raise :class:`GVSLInputError` when it is built.

    Attributes:
        source: a key of :data:`~gvsl.data.sources.SOURCES` (``phantom-ct``, ``mni-brain``, ``mmwhs``,
            ``asoca``, ``stoic``, ``candi``, ``msd``, ``folder``).
        task: task key; None: the source's only task (``msd``: ``MSD``; ``phantom-ct``: all four, each
            into its own sub-folder).
        root: input folder of a real dataset, searched recursively (None for generated sources).
        subjects: generated sources: cases per task (split in the default proportions); real
            sources: use a seeded subset of this many cases. None: the defaults / every case.
        shape: generated volume shape (D, H, W), generated sources only.
        spacing: target voxel size in mm, one number or three (real data: 1 mm³; generated: the
            generator's grid).
        seed: base seed of subjects and splits.
        window_offset: CT window offset added to HU (default 1024, see :mod:`gvsl.data.preprocess`).
        roi_mm: override of the task's ROI size (mm).
        modality: ``ct`` or ``mr`` for the generic sources (``folder``: default ``ct``; ``msd``:
            default its dataset.json).
        progress: show a tqdm progress bar.
    """

    source: str
    task: str | None = None
    root: Path | None = None
    subjects: Annotated[int | None, Bounds(1, integer=True)] = None
    shape: Annotated[tuple[int, int, int] | None, Positive] = None
    spacing: Annotated[tuple[float, float, float] | None, Positive] = None
    seed: Annotated[int, Bounds(0, integer=True)] = 0
    window_offset: Annotated[float | None, FINITE] = None
    roi_mm: Annotated[tuple[float, float, float] | None, Positive] = None
    modality: Annotated[str | None, OneOf(MODALITIES)] = None
    progress: bool = False

    def __post_init__(self):
        for name in ("shape", "spacing", "roi_mm"):
            setattr(self, name, _triple(getattr(self, name)))
        super().__post_init__()

    @classmethod
    def from_params(
        cls, settings: Mapping[str, Any], *, task: str, seed: int, progress: bool = False
    ) -> PrepareRequest:
        """The request of ``params.yaml`` → ``prepare.tasks.<task>`` (``settings``), with ``prepare.seed``."""
        valid = sorted(f.name for f in dataclasses.fields(cls) if f.name not in _STAGE_FIELDS)
        unknown = set(settings) - set(valid)
        if unknown:
            raise GVSLInputError(f"unknown settings {sorted(unknown)}; valid: {valid}")
        if "source" not in settings:
            raise GVSLInputError("missing 'source'")
        return cls(**settings, task=task, seed=seed, progress=progress)

    def root_folder(self) -> Path:
        """:attr:`root`, which must be a folder (real sources only)."""
        assert self.root is not None
        if not self.root.is_dir():
            raise GVSLInputError(f"{self.root}: input folder not found")
        return self.root

    def target_spacing(self, default: Sequence[float]) -> tuple[float, float, float]:
        """:attr:`spacing`, or the source's ``default``."""
        return tuple(float(s) for s in (self.spacing or default))

    @property
    def offset(self) -> float:
        """The CT window offset (:attr:`window_offset` or the default for HU)."""
        return DEFAULT_HU_OFFSET if self.window_offset is None else float(self.window_offset)

    def progress_bar(self, items: Iterable, desc: str):
        """``items`` with a progress bar when :attr:`progress` is on."""
        # disable=None: a bar only on a terminal, so logs and captured stderr stay clean
        return tqdm(items, desc=desc, unit="case", disable=None if self.progress else True, leave=False)
