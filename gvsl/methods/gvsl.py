"""GVSL and its Table 1 ablations (He et al., CVPR 2023) as pre-training methods.

Per step: ``batch_size`` pairs of different subjects cropped at one position; x_A is corrupted by
the Models-Genesis appearance transform, one spatial transform moves t'(x_A), x_A and x_B
(:func:`gvsl.views.make_views`), and the network (:class:`gvsl.nets.GVSL`) is trained with
L_NCC + L_smooth + L_MSE (:class:`gvsl.losses.GVSLLoss`), each ablation dropping its terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gvsl.losses import GVSLLoss, LossTerms
from gvsl.methods.base import Crops, PretrainMethod
from gvsl.methods.options import MethodOptions
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
    """

    affine_channels: int | None = None
    local_head_channels: int | None = None
    appearance: dict[str, Any] = field(default_factory=dict)
    spatial: dict[str, Any] = field(default_factory=dict)

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
        self.criterion = GVSLLoss()

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
