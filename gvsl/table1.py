"""Table 1 of the paper (He et al., CVPR 2023) as the kit names it: its tasks, protocols and rows, their
display names and the paper's values. The one home of this vocabulary; the pipeline, transfer and report
read it here.

The rows are the method registry's (:data:`gvsl.methods.TABLE1_METHODS`, titled by
:data:`gvsl.methods.METHOD_TITLES`): scratch, the baselines, GVSL's ablations, GVSL.
"""

from __future__ import annotations

import math

from gvsl.data import TASK_TYPES
from gvsl.methods import GVSL_METHODS, METHOD_TITLES, PRETRAIN_METHODS, SCRATCH, TABLE1_METHODS

__all__ = [
    "ABLATIONS",
    "FIGURE_NAMES",
    "METHODS",
    "METHOD_NAMES",
    "PAPER_TABLE1",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "REGISTERING",
    "TASKS",
    "TASK_METRICS",
]

#: the downstream tasks, in the paper's column order
TASKS = ("SHC", "SAC", "CCC", "SBM")
#: each task's metric as the table heads it (Dice for segmentation, AUC for classification)
TASK_METRICS = {task: {"segmentation": "Dice", "classification": "AUC"}[TASK_TYPES[task]] for task in TASKS}
#: the transfer protocols: (a) a head on the frozen backbone, (b) fine-tuning everything
PROTOCOL_NAMES = {"linear": "(a) linear", "finetune": "(b) fine-tune"}
PROTOCOLS = tuple(PROTOCOL_NAMES)

#: Table 1's rows and their titles
METHODS = TABLE1_METHODS
METHOD_NAMES = METHOD_TITLES
#: GVSL's ablations (compared with whole GVSL like every baseline)
ABLATIONS = tuple(key for key in GVSL_METHODS if key != "gvsl")
#: the rows with a Z-matching head, which register held-out pairs (Fig. 8)
REGISTERING = tuple(key for key, method in PRETRAIN_METHODS.items() if method.registers)
#: how the figures name the initialisations they compare, by what each one learns
FIGURE_NAMES = {
    SCRATCH: "scratch",
    "no_zmatch": "restoration only",
    "no_fundament": "Z-matching only",
    "no_affine": "w/o affine head",
    "gvsl": "whole GVSL",
}

# He et al., CVPR 2023, Table 1 (percent): method -> protocol -> (SHC, SAC, CCC, SBM). The kit records
# the rows of Scratch, Models Genesis, Rotation, SimCLR, the ablations and GVSL; the paper's rows of the
# other baselines (Denoising, In-painting, DeepCluster, SimSiam, BYOL) are not recorded here, so their
# paper_value is NaN and the report says "not recorded".
_PAPER = {
    SCRATCH: {"linear": (21.9, 10.0, 52.7, 56.4), "finetune": (87.8, 80.4, 74.4, 89.7)},
    "models_genesis": {"linear": (47.4, 22.5, 60.4, 44.9), "finetune": (90.3, 79.9, 80.7, 89.4)},
    "rotation": {"linear": (56.1, 21.9, 62.1, 54.1), "finetune": (90.6, 81.1, 77.1, 89.6)},
    "simclr": {"linear": (48.7, 15.5, 61.3, 58.7), "finetune": (86.9, 79.9, 74.3, 89.3)},
    "no_zmatch": {"linear": (49.1, 21.1, 55.8, 45.1), "finetune": (88.3, 81.2, 81.3, 89.7)},
    "no_fundament": {"linear": (45.3, 0.0, 58.8, 48.5), "finetune": (87.0, 79.5, 76.6, 89.0)},
    "no_affine": {"linear": (57.7, 17.9, 57.6, 53.4), "finetune": (89.4, 82.3, 79.8, 89.8)},
    "gvsl": {"linear": (68.4, 28.7, 60.8, 79.9), "finetune": (91.2, 81.3, 82.2, 90.0)},
}
#: (method, protocol, task) -> the paper's value in percent (NaN where the kit does not record it)
PAPER_TABLE1 = {
    (m, p, t): _PAPER[m][p][i] if m in _PAPER else math.nan
    for m in METHODS
    for p in PROTOCOLS
    for i, t in enumerate(TASKS)
}
