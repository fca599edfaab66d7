"""The DVC pipeline's stages as functions: typed settings in (:mod:`gvsl.pipeline.config`), files under ``build/``.

The notebooks in ``notebooks/`` receive the settings from papermill (``python -m gvsl.stage`` reads
``params.yaml`` over the paper's defaults) and call these functions, so a stage run from a notebook, from
Python or from a test does the same thing.
Folder layout (``dvc.yaml`` names the same paths):

* ``build/prepared/<TASK>``: prepared datasets (pretrain, SHC, SAC, CCC, SBM);
* ``build/pretrain/<method>/seed<S>``: one folder per pre-training seed, each with ``backbone.pt``
  (+ ``checkpoint.pt``, ``dvclive/`` for pre-trained methods, and ``pretext.json`` for those with a
  Z-matching head); ``scratch`` holds a freshly initialised backbone per seed, so every
  (method, seed) is one file;
* ``build/transfer/<method>/<TASK>-<protocol>``: one Table 1 cell, with one folder per (pre-training
  seed, transfer seed), ``p<S>-t<T>`` (``metrics.json``, ``model.pt``, ``dvclive/``), and
  ``summary.json`` over all of them; the method's one transfer stage writes all of its cells.
"""

from gvsl.pipeline.config import PARAMS, Settings, as_settings, compose, load_settings
from gvsl.pipeline.layout import BUILD, find_project, notebook_settings, prepared_dir, pretrain_dir, transfer_dir
from gvsl.pipeline.stage_prepare import prepare_stage
from gvsl.pipeline.stage_pretrain import pretrain_configs, pretrain_stage
from gvsl.pipeline.stage_transfer import RUN_INPUTS, TransferJob, transfer_jobs, transfer_stage
from gvsl.table1 import METHODS, PROTOCOLS, TASKS

__all__ = [
    "BUILD",
    "METHODS",
    "PARAMS",
    "PROTOCOLS",
    "RUN_INPUTS",
    "TASKS",
    "Settings",
    "TransferJob",
    "as_settings",
    "compose",
    "find_project",
    "load_settings",
    "notebook_settings",
    "prepare_stage",
    "prepared_dir",
    "pretrain_configs",
    "pretrain_dir",
    "pretrain_stage",
    "transfer_dir",
    "transfer_jobs",
    "transfer_stage",
]
