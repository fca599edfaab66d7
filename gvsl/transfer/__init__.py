"""Transfer protocols of the paper: a pretrained backbone plus one-layer head, trained on a downstream task.

He et al., CVPR 2023, Sec. 4 (paraphrased): *linear* freezes the backbone and trains one layer only
(segmentation: a convolution + softmax on the local feature f^l; classification: a linear layer +
sigmoid on the pooled global feature f^g); *fine-tune* trains the same heads and all backbone
parameters. Batch 1, Adam 1e-4, 4×10⁴ iterations, validation every 200 iterations, the model best
on validation is tested. Segmentation is scored by the mean Dice over foreground classes,
classification by the ROC AUC.

Where the paper is silent (the authors' downstream code exists for SHC only), the choices made here
are described in the module that makes them:

- :mod:`gvsl.transfer.config` — run settings (:class:`TransferConfig`) and the head's output count.
- :mod:`gvsl.transfer.model` — the backbone with its head and the frozen-feature cache; the
  segmentation head's kernel.
- :mod:`gvsl.transfer.cases` — case checks and the training crops (foreground oversampling).
- :mod:`gvsl.transfer.objectives` — the segmentation loss and its class weights.
- :mod:`gvsl.transfer.metrics` — Dice and AUC; sliding-window inference.
- :mod:`gvsl.transfer.train` — :func:`run_transfer`; how ties between validation scores are broken.
- :mod:`gvsl.transfer.features` — local features for the t-SNE of paper Fig. 7.
- :mod:`gvsl.transfer.command` — ``gvsl transfer`` on a prepared dataset folder.
"""

# Importable from here besides __all__: add_arguments and run (gvsl.cli loads this package as the
# ``transfer`` command), transfer_prepared (the pipeline), METRIC_NAMES, and the private helpers
# _Prepared and _class_weights (the tests).
from gvsl.errors import NonFiniteLossError
from gvsl.transfer.cases import Case, _Prepared  # noqa: F401
from gvsl.transfer.command import add_arguments, run, transfer_prepared  # noqa: F401
from gvsl.transfer.config import (  # noqa: F401
    CLASS_WEIGHTINGS,
    METRIC_NAMES,
    SEG_LOSSES,
    PlateauRule,
    TransferConfig,
    num_outputs,
)
from gvsl.transfer.features import extract_local_features, local_features
from gvsl.transfer.metrics import evaluate_cases, evaluate_classification, evaluate_segmentation, validate
from gvsl.transfer.model import TransferModel, build_transfer_model
from gvsl.transfer.objectives import _class_weights  # noqa: F401
from gvsl.transfer.train import TransferResult, run_transfer

__all__ = [
    "CLASS_WEIGHTINGS",
    "SEG_LOSSES",
    "Case",
    "NonFiniteLossError",
    "PlateauRule",
    "TransferConfig",
    "TransferModel",
    "TransferResult",
    "build_transfer_model",
    "evaluate_cases",
    "evaluate_classification",
    "evaluate_segmentation",
    "extract_local_features",
    "local_features",
    "num_outputs",
    "run_transfer",
    "validate",
]
