"""GVSL and its Table 1 ablations (He et al., CVPR 2023) as pre-training methods.

Per step: ``batch_size`` pairs of different subjects cropped at one position; x_A is corrupted by
the Models-Genesis appearance transform, one spatial transform moves t'(x_A), x_A and x_B
(:func:`gvsl.views.make_views`), and the network (:class:`gvsl.nets.GVSL`) is trained with
L_NCC + L_smooth + L_MSE (:class:`gvsl.losses.GVSLLoss`), each ablation dropping its terms; the option
``similarity`` replaces L_NCC by mutual information (``mi``) for cohorts whose contrast differs between
subjects (MR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch

from gvsl.losses import SIMILARITIES, GVSLLoss, LossTerms
from gvsl.methods.base import Crops, PretrainMethod
from gvsl.methods.options import MethodOptions, OneOf
from gvsl.nets import GVSL, VARIANTS
from gvsl.nets.gvsl_network import GVSLOutput
from gvsl.views import AppearanceTransform, RandSpatialTransform, make_views

__all__ = ["GVSL_METHODS", "GVSLMethod", "GVSLOptions"]


@dataclass
class GVSLOptions(MethodOptions):
    """Settings of GVSL and its ablations.

    Args:
        affine_channels: width of the affine head's block (paper 256); None: the paper's ratio to
            the backbone (:func:`gvsl.nets.gvsl_network.head_widths`).
        local_head_channels: width of the deformable and restoration heads (paper 16); None: the
            paper's ratio to the backbone.
        appearance: keyword arguments of :class:`gvsl.views.AppearanceTransform`.
        spatial: keyword arguments of :class:`gvsl.views.RandSpatialTransform`.
        similarity: what the Z-matching head's registration maximises (:data:`gvsl.losses.SIMILARITIES`):
            ``ncc``, the paper's local normalised cross-correlation (9³ window; the default, unchanged), or
            ``mi``, global mutual information (:func:`gvsl.losses.mutual_information_loss`: MONAI's
            ``GlobalMutualInformationLoss``, Gaussian Parzen windows, 23 bins over [0, 1]), which any
            one-to-one intensity map between the two subjects leaves unchanged; the authors suggest it for
            MR, where their NCC term "did not learn" (their issue #7). The loss term is then logged as ``mi``
            (−MI in nats, ≤ 0). Held-out registrations report the NCC loss whichever similarity trained,
            and also the MI loss under ``mi``. Measured on the mni-brain cohort (``benchmarks/similarity_mr.py``,
            two seeds; README "GVSL's options, and a similarity for MR"): held-out warped-label Dice 43.9 % with
            ``mi`` against 43.2 % with ``ncc`` as generated and 41.4 against 41.2 % with mixed contrasts
            between subjects (38.1 % unregistered), SBM linear probe 52.1 against 53.1 % and 34.0 against
            30.5 %; no difference shown.
    """

    affine_channels: int | None = None
    local_head_channels: int | None = None
    appearance: dict[str, Any] = field(default_factory=dict)
    spatial: dict[str, Any] = field(default_factory=dict)
    similarity: Annotated[str, OneOf(SIMILARITIES)] = "ncc"

    def __post_init__(self):
        super().__post_init__()
        for name in ("affine_channels", "local_head_channels"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 8:
                raise ValueError(f"{name} must be an integer >= 8, got {getattr(self, name)}")
        # build once here, so that a bad range fails when the settings are read
        AppearanceTransform(**self.appearance)
        RandSpatialTransform(**self.spatial)


class GVSLMethod(PretrainMethod):
    """One of :data:`gvsl.nets.VARIANTS`; the class attribute ``variant`` picks it (:data:`GVSL_METHODS`)."""

    Options = GVSLOptions
    sampling = "pairs"
    variant: str = "gvsl"

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.appearance = AppearanceTransform(**self.options.appearance)
        self.spatial = RandSpatialTransform(**self.options.spatial)
        self.criterion = GVSLLoss(similarity=self.options.similarity)

    def build(self, in_channels: int, channels: Sequence[int]) -> GVSL:
        return GVSL.variant(
            self.variant,
            in_channels=in_channels,
            channels=channels,
            affine_channels=self.options.affine_channels,
            local_head_channels=self.options.local_head_channels,
        )

    def inputs(self, crops: Crops, generator: torch.Generator):
        views = make_views(crops.first, crops.second, self.appearance, self.spatial, generator)
        net_inputs = {"view_a": views.view_a}
        if self.registers:
            net_inputs["image_b"] = views.image_b
        return net_inputs, {"target": views.target_a}

    def loss(self, outputs: GVSLOutput, targets: Mapping[str, torch.Tensor]) -> LossTerms:
        return self.criterion(outputs, targets["target"])


def _variant(key: str, title: str) -> type[GVSLMethod]:
    switches = VARIANTS[key]
    return type(
        f"GVSLMethod_{key}",
        (GVSLMethod,),
        {
            "key": key,
            "title": title,
            "variant": key,
            "registers": switches["affine"] or switches["deformable"],
            "__doc__": f"{title}: {switches}",
        },
    )


#: Table 1's ablations, then the whole method
GVSL_METHODS: dict[str, type[GVSLMethod]] = {
    key: _variant(key, title)
    for key, title in (
        ("no_zmatch", "w/o Z-Matching"),
        ("no_fundament", "w/o Fundament"),
        ("no_affine", "w/o Affine head"),
        ("gvsl", "GVSL (whole)"),
    )
}
