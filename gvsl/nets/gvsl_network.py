"""The GVSL pre-training network: backbone, Z-matching head and restoration head wired together."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from gvsl.geometry import affine_to_ddf, compose_affine_ddf, warp, warp_affine
from gvsl.nets.gvsl_heads import AffineHead, DeformableHead, RestorationHead
from gvsl.nets.unet import PAPER_CHANNELS, UNet3D, check_volume
from gvsl.settings import from_mapping

__all__ = ["GVSL", "VARIANTS", "GVSLConfig", "GVSLOutput", "head_widths"]


def head_widths(channels) -> tuple[int, int]:
    """The heads' widths for a backbone of ``channels``: (affine, local).

    The paper's affine head is half as wide as the bottleneck (256 of 512) and its deformable and
    restoration heads half as wide as the last decoder level (16 of 32). Both keep those ratios, in
    multiples of 8 (the GroupNorm groups), with at least 8 channels for the affine head and 16 for the
    local heads: the default profile's (8, …, 128, …, 8) gets 64 and 16. The paper's 256-wide affine
    block on that backbone held 3.5 M of the network's 5 M parameters and cost 19 % of a CPU step.
    Local heads 8 wide cost 7 % less again, but w/o Fundament then did not register within the
    default's 400 iterations (held-out NCC 0.457 → 0.435, against 0.457 → 0.302 with 16).
    """
    channels = tuple(int(c) for c in channels)

    def half(width: int, least: int) -> int:
        return max(least, width // 2 // 8 * 8)

    return half(channels[4], 8), half(channels[-1], 16)


@dataclass(frozen=True)
class GVSLConfig:
    """Everything needed to rebuild a :class:`GVSL` (stored in every checkpoint)."""

    in_channels: int = 1
    channels: tuple[int, ...] = PAPER_CHANNELS
    affine: bool = True
    deformable: bool = True
    restoration: bool = True
    #: None: :func:`head_widths` of ``channels``
    affine_channels: int | None = None
    local_head_channels: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 9:
            return  # not a backbone: UNet3D says why when the network is built
        affine, local = head_widths(self.channels)
        if self.affine_channels is None:
            object.__setattr__(self, "affine_channels", affine)
        if self.local_head_channels is None:
            object.__setattr__(self, "local_head_channels", local)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GVSLConfig:
        return from_mapping(cls, d, "GVSL config")


#: The paper's Table 1 ablations as head switches.
VARIANTS: dict[str, dict[str, bool]] = {
    "gvsl": dict(affine=True, deformable=True, restoration=True),
    "no_zmatch": dict(affine=False, deformable=False, restoration=True),
    "no_fundament": dict(affine=True, deformable=True, restoration=False),
    "no_affine": dict(affine=False, deformable=True, restoration=True),
}


@dataclass
class GVSLOutput:
    """What one GVSL forward pass produces. Absent components are ``None``.

    Attributes:
        restored: (B, C, D, H, W) restoration of the corrupted view (fundament).
        warped: (B, C, D, H, W) image B aligned onto view A's grid (Z-matching).
        affine: (B, 3, 4) affine B→A in voxel units, (D, H, W) order (see :mod:`gvsl.geometry`).
        flow: (B, 3, D, H, W) deformable displacement in voxels (regularised by the smoothness term).
        ddf: (B, 3, D, H, W) fused displacement (affine then deformable) used to produce ``warped``.
    """

    restored: torch.Tensor | None = None
    warped: torch.Tensor | None = None
    affine: torch.Tensor | None = None
    flow: torch.Tensor | None = None
    ddf: torch.Tensor | None = None


class GVSL(nn.Module):
    """Geometric Visual Similarity Learning network (He et al., CVPR 2023, Fig. 3).

    Args:
        in_channels: image channels.
        channels: nine backbone widths (see :class:`~gvsl.nets.unet.UNet3D`).
        affine: build the affine head (global similarity).
        deformable: build the deformable head (local similarity).
        restoration: build the restoration head (fundament).
        affine_channels: width of the affine head's block (paper 256); None: :func:`head_widths`.
        local_head_channels: width of the deformable and restoration heads (paper 16); None:
            :func:`head_widths`.

    ``forward(view_a, image_b)``: ``view_a`` is the appearance-corrupted view t'(x_A) (the fixed
    image), ``image_b`` the other subject (moving). Without a Z-matching head ``image_b`` may be
    ``None`` and is not passed through the backbone.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels=PAPER_CHANNELS,
        affine: bool = True,
        deformable: bool = True,
        restoration: bool = True,
        affine_channels: int | None = None,
        local_head_channels: int | None = None,
    ):
        super().__init__()
        self.config = GVSLConfig(
            in_channels, tuple(channels), affine, deformable, restoration, affine_channels, local_head_channels
        )
        if not (affine or deformable or restoration):
            raise ValueError("GVSL needs at least one of affine, deformable or restoration")
        self.backbone = UNet3D(in_channels, channels)
        gc, lc = self.backbone.global_channels, self.backbone.local_channels
        affine_channels, local_head_channels = self.config.affine_channels, self.config.local_head_channels
        self.affine_head = AffineHead(gc, affine_channels) if affine else None
        self.deformable_head = DeformableHead(lc, local_head_channels) if deformable else None
        self.restoration_head = RestorationHead(lc, in_channels, local_head_channels) if restoration else None

    @classmethod
    def from_config(cls, config: GVSLConfig | dict[str, Any]) -> GVSL:
        if isinstance(config, dict):
            config = GVSLConfig.from_dict(config)
        return cls(**{k: getattr(config, k) for k in GVSLConfig.__dataclass_fields__})

    @classmethod
    def variant(cls, name: str, **kwargs) -> GVSL:
        """Build one of :data:`VARIANTS` (``gvsl``, ``no_zmatch``, ``no_fundament``, ``no_affine``)."""
        if name not in VARIANTS:
            raise ValueError(f"unknown GVSL variant {name!r}; valid: {sorted(VARIANTS)}")
        return cls(**VARIANTS[name], **kwargs)

    @property
    def z_matching(self) -> bool:
        return self.affine_head is not None or self.deformable_head is not None

    def forward(self, view_a: torch.Tensor, image_b: torch.Tensor | None = None) -> GVSLOutput:
        cin = self.config.in_channels
        check_volume(view_a, "view_a", cin)
        out = GVSLOutput()
        if self.z_matching:
            if image_b is None:
                raise ValueError("image_b is required when the Z-matching head is enabled")
            check_volume(image_b, "image_b", cin)
            if image_b.shape != view_a.shape:
                raise ValueError(f"image_b shape {tuple(image_b.shape)} must equal view_a shape {tuple(view_a.shape)}")
            # One backbone pass over both images (shared weights, GroupNorm is per sample).
            global_f, local_f = self.backbone(torch.cat([view_a, image_b]))
            n = view_a.shape[0]
            global_a, global_b = global_f[:n], global_f[n:]
            local_a, local_b = local_f[:n], local_f[n:]
        else:
            global_a, local_a = self.backbone(view_a)

        if self.restoration_head is not None:
            out.restored = self.restoration_head(local_a)
        if not self.z_matching:
            return out

        spatial = view_a.shape[2:]
        if self.affine_head is not None:
            out.affine = self.affine_head(global_b, global_a, spatial)
            local_b = warp_affine(local_b, out.affine)
        if self.deformable_head is not None:
            out.flow = self.deformable_head(local_b, local_a)
        if out.affine is not None and out.flow is not None:
            out.ddf = compose_affine_ddf(out.affine, out.flow)
        elif out.affine is not None:
            out.ddf = affine_to_ddf(out.affine, spatial)
        else:
            out.ddf = out.flow
        out.warped = warp(image_b, out.ddf)
        return out
