"""One builder per data source: find the cases, check them, preprocess them, write a prepared dataset.

Every builder writes one task's dataset (:class:`gvsl.data.dataset.DatasetWriter`) into a folder
that :func:`gvsl.data.prepare.prepare` later renames into place. The same preprocessing path serves
the generated cohorts (default profile) and the real datasets (paper profile): canonical RAS+
orientation, resampling to the target spacing (a no-op for generated volumes, which are made on
that grid), the task's ROI crop, then the intensity window.

- :mod:`~gvsl.data.sources.request` — :class:`PrepareRequest`, the one typed prepare config.
- :mod:`~gvsl.data.sources.registry` — :data:`SOURCES`.
- :mod:`~gvsl.data.sources.splits` — the paper's splits, subject seeds, seeded split assignment.
- :mod:`~gvsl.data.sources.conventions` — the shared path: orientation, resampling, ROI, window.
- :mod:`~gvsl.data.sources.discovery` — finding a dataset's files and image/label pairs.
- :mod:`~gvsl.data.sources.segmentation` — labelled pairs to a segmentation dataset (MM-WHS, ASOCA, MSD).
- one module per dataset family: :mod:`~gvsl.data.sources.generated` (phantom-ct, mni-brain),
  :mod:`~gvsl.data.sources.heart` (MM-WHS, ASOCA), :mod:`~gvsl.data.sources.stoic`,
  :mod:`~gvsl.data.sources.candi`, :mod:`~gvsl.data.sources.msd` (MSD and a folder of scans).
"""

from gvsl.data.sources.candi import FREESURFER_NAMES
from gvsl.data.sources.conventions import ROI_MM
from gvsl.data.sources.heart import MMWHS_LABELS
from gvsl.data.sources.msd import MSD_KEYS
from gvsl.data.sources.registry import SOURCES, SourceSpec, source_spec
from gvsl.data.sources.request import MODALITIES, PrepareRequest
from gvsl.data.sources.splits import PAPER_SPLITS, PHANTOM_COUNTS, assign_splits, scale_counts, subject_seed
from gvsl.data.sources.stoic import STOIC_COLUMNS

__all__ = [
    "FREESURFER_NAMES",
    "MMWHS_LABELS",
    "MODALITIES",
    "MSD_KEYS",
    "PAPER_SPLITS",
    "PHANTOM_COUNTS",
    "ROI_MM",
    "SOURCES",
    "STOIC_COLUMNS",
    "PrepareRequest",
    "SourceSpec",
    "assign_splits",
    "scale_counts",
    "source_spec",
    "subject_seed",
]
