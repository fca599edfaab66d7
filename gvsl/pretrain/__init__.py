"""Pre-training: every method of :mod:`gvsl.methods` by one engine, resumable, DDP-ready
(``torchrun --nproc_per_node=N -m gvsl pretrain``).

Per iteration the method draws its crops from the :class:`~gvsl.bank.VolumeBank` (GVSL: pairs of
different subjects at one position), turns them into its inputs (its augmentations), and the
engine minimises the method's loss with Adam (constant learning rate as in the paper, or a
warm-up + cosine schedule for short runs). Checkpoints, resume, DDP, DVCLive, progress and the
non-finite-loss guard are the same for every method. With held-out pairs, every ``eval_every``
iterations the method's loss is measured on held-out subjects (``heldout_loss/``) and a
Z-matching head registers them (``heldout/``, :mod:`gvsl.pretext`).

- :mod:`~gvsl.pretrain.config` — run settings (:class:`PretrainConfig`) and the learning-rate schedule.
- :mod:`~gvsl.pretrain.engine` — :func:`pretrain`: set-up, the loop, checkpoints, ``backbone.pt``.
- :mod:`~gvsl.pretrain.resume` — which checkpoint continues a run, and restoring it.
- :mod:`~gvsl.pretrain.heldout` — held-out pairs and their evaluation during training.
- :mod:`~gvsl.pretrain.command` — ``gvsl pretrain`` on a prepared dataset folder.
"""

# Importable from here besides __all__: add_arguments and run (gvsl.cli loads this package as the
# ``pretrain`` command).
from gvsl.bank import VolumeBank
from gvsl.errors import NonFiniteLossError
from gvsl.pretrain.command import add_arguments, run  # noqa: F401
from gvsl.pretrain.config import LR_SCHEDULES, PretrainConfig, lr_factor
from gvsl.pretrain.engine import PretrainResult, pretrain, pretrain_prepared
from gvsl.pretrain.heldout import load_heldout
from gvsl.pretrain.resume import RESUME_IF_UNCHANGED

__all__ = [
    "LR_SCHEDULES",
    "RESUME_IF_UNCHANGED",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainResult",
    "VolumeBank",
    "load_heldout",
    "lr_factor",
    "pretrain",
    "pretrain_prepared",
]
