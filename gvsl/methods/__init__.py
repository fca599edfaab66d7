"""Pre-training methods: GVSL, its ablations and the paper's eight baselines, one module each, all run
by one engine (:func:`gvsl.pretrain.pretrain`) on the same backbone, data, crops, schedule and seeds.

This module is the one home of Table 1's rows (the rest of Table 1's vocabulary is in :mod:`gvsl.table1`):
:data:`TABLE1_METHODS` lists them in the paper's order (``scratch`` is the untrained backbone),
:data:`METHOD_TITLES` names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.methods.base import Crops, NetworkConfig, PretextNetwork, PretrainMethod
from gvsl.methods.byol import BYOL
from gvsl.methods.deepcluster import DeepCluster
from gvsl.methods.denoising import Denoising
from gvsl.methods.gvsl import GVSL_METHODS, GVSLMethod
from gvsl.methods.inpainting import Inpainting
from gvsl.methods.models_genesis import ModelsGenesis
from gvsl.methods.rotation import Rotation
from gvsl.methods.simclr import SimCLR
from gvsl.methods.simsiam import SimSiam

__all__ = [
    "BASELINES",
    "GVSL_METHODS",
    "METHOD_TITLES",
    "PRETRAIN_METHODS",
    "SCRATCH",
    "TABLE1_METHODS",
    "Crops",
    "GVSLMethod",
    "NetworkConfig",
    "PretextNetwork",
    "PretrainMethod",
    "build_method",
]

#: the paper's self-supervised baselines, in the order Table 1 lists them here
BASELINES: dict[str, type[PretrainMethod]] = {
    method.key: method
    for method in (ModelsGenesis, Rotation, SimCLR, Denoising, Inpainting, DeepCluster, SimSiam, BYOL)
}

#: every method ``gvsl pretrain --method`` trains
PRETRAIN_METHODS: dict[str, type[PretrainMethod]] = {**BASELINES, **GVSL_METHODS}

#: Table 1's rows: no pre-training, the baselines, GVSL's ablations, GVSL
#: the row of a backbone that is not pre-trained (random initialisation)
SCRATCH = "scratch"
TABLE1_METHODS: tuple[str, ...] = (SCRATCH, *PRETRAIN_METHODS)

METHOD_TITLES: dict[str, str] = {SCRATCH: "Scratch", **{key: m.title for key, m in PRETRAIN_METHODS.items()}}


def build_method(key: str, options: Mapping[str, Any] | None = None) -> PretrainMethod:
    """The method ``key`` with its ``options`` (``params.yaml`` → ``pretrain.options.<key>``)."""
    if key not in PRETRAIN_METHODS:
        raise GVSLInputError(f"unknown pre-training method {key!r}; valid: {list(PRETRAIN_METHODS)}")
    return PRETRAIN_METHODS[key](options)
