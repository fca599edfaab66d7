"""Data: the prepared-dataset format, readers and checks, the paper's preprocessing, the sources and generated
cohorts, and ``gvsl prepare``. Stand-ins of the paper's datasets live beside the rehearsal that reads them
(:mod:`gvsl.rehearsal.stand_ins`).

- :mod:`gvsl.data.dataset` — the folder format every later stage reads (:func:`load_prepared`).
- :mod:`gvsl.data.io` — NIfTI / NRRD / MetaImage readers with input checks.
- :mod:`gvsl.data.dicom` — DICOM series (one file per slice): grouping, ordering, HU, RAS+ affine, checks.
- :mod:`gvsl.data.preprocess` — canonical orientation, resampling, CT window, ROI crops.
- :mod:`gvsl.data.sources` — one builder per source (generated cohorts, MM-WHS, ASOCA, STOIC, CANDI, MSD, a folder).
- :mod:`gvsl.data.cohorts` — the generated subjects (chest CT and brain MR) the default profile prepares.
- :mod:`gvsl.data.prepare` — :func:`prepare` and the ``gvsl prepare`` command.
"""

from gvsl.data.dataset import SPLITS, TASK_TYPES, Case, DatasetInfo, PreparedDataset, load_prepared
from gvsl.data.prepare import prepare

__all__ = ["SPLITS", "TASK_TYPES", "Case", "DatasetInfo", "PreparedDataset", "load_prepared", "prepare"]
