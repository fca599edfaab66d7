"""The GVSL backbone N_θ: a 3D U-Net returning a global and a local feature.

Adapted from: He et al., "Geometric Visual Similarity Learning in 3D Medical Image Self-supervised
Pre-training", CVPR 2023, Sec. 4 and the authors' ``UNet_base``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gvsl.errors import GVSLInputError
from gvsl.runtime import full_precision

__all__ = [
    "PAPER_CHANNELS",
    "ConvBlock",
    "LocalFeatureUNet",
    "UNet3D",
    "check_channels",
    "check_group_norm_width",
    "check_volume",
    "parse_channels",
]

#: Widths of the paper's U-Net: five encoder levels, then four decoder levels.
PAPER_CHANNELS: tuple[int, ...] = (32, 64, 128, 256, 512, 256, 128, 64, 32)

#: Every spatial size is padded to a multiple of this (four 2× poolings).
_DIVISOR = 16


def parse_channels(text: str) -> tuple[int, ...]:
    """Nine comma-separated backbone widths, e.g. ``8,16,32,64,128,64,32,16,8``."""
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError as err:
        raise GVSLInputError(f"--channels: expecting nine comma-separated integers, got {text!r}") from err
    if len(channels) != 9:
        raise GVSLInputError(f"--channels: expecting nine widths (five down, four up), got {len(channels)}: {text!r}")
    check_channels(channels, "--channels")
    return channels


def check_channels(channels: Sequence[int], where: str) -> None:
    """Raise :class:`GVSLInputError` (one line, naming ``where``) unless ``channels`` can build a :class:`UNet3D`."""
    if len(channels) != 9:
        raise GVSLInputError(
            f"{where}: expecting nine widths (five down, four up), got {len(channels)}: {list(channels)}"
        )
    for index, width in enumerate(channels):
        try:
            check_group_norm_width(int(width), 8, f"channels[{index}]")
        except ValueError as err:
            raise GVSLInputError(f"{where}: {err}") from None


def check_group_norm_width(channels: int, group_size: int, what: str) -> None:
    """Raise ``ValueError`` unless ``GroupNorm(channels // group_size, channels)`` can be built."""
    groups = channels // group_size
    if channels < group_size or channels % groups:
        raise ValueError(
            f"{what} must be a multiple of its GroupNorm group count (channels // {group_size}) and at "
            f"least {group_size}, got {channels}"
        )


def check_volume(x: torch.Tensor, name: str, in_channels: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite (B, C, D, H, W) tensor with ``in_channels`` channels."""
    if x.ndim != 5:
        raise ValueError(f"{name}: expecting 5-D input (B, C, D, H, W), got shape {tuple(x.shape)}")
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(f"{name}: expecting {in_channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: input holds NaN or Inf values")


class ConvBlock(nn.Sequential):
    """Two 3×3×3 convolutions, each followed by GroupNorm (``channels // 8`` groups) and LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, what: str = "block width"):
        check_group_norm_width(out_channels, 8, what)
        groups = out_channels // 8
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PyTorch 2.13's CPU bf16 3×3×3 convolution (oneDNN) returns a weight gradient with NaNs, at random
        # (uninitialised memory), for inputs 2 voxels deep: 22 to 31 of 60 backward passes of a
        # (2, 64, 2, 2, 2) input, none at 3 or 4 voxels or in fp32. The bottleneck of 32³ crops is 2³, so
        # CPU bf16 training went non-finite within a few steps. Such a block runs in fp32 (it is tiny).
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and min(x.shape[2:]) <= 2:
            return full_precision(super().forward)(x)
        return super().forward(x)


class UNet3D(nn.Module):
    """3D U-Net of GVSL.

    Encoder: a block, then four times max-pool 2 and a block. Decoder: four times trilinear ×2
    upsampling (align_corners=True), concatenation ``[skip, upsampled]`` and a block.

    Args:
        in_channels: image channels.
        channels: nine widths, five encoder levels then four decoder levels
            (paper: ``(32, 64, 128, 256, 512, 256, 128, 64, 32)``). Each must suit GroupNorm with
            ``width // 8`` groups.

    ``forward(x)`` takes ``x`` of shape (B, C, D, H, W), any spatial size. It is zero-padded
    symmetrically to a multiple of 16 (as the authors do) and returns

    - ``global_feature`` f^g: the bottleneck, (B, channels[4], D'/16, H'/16, W'/16) with D' the padded size;
    - ``local_feature`` f^l: the last decoder level cropped back to (B, channels[8], D, H, W).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = PAPER_CHANNELS):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 9:
            raise ValueError(f"channels: expecting nine widths (five down, four up), got {len(channels)}: {channels}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.channels = channels
        enc, dec = channels[:5], channels[5:]
        self.stem = ConvBlock(in_channels, enc[0], "channels[0]")
        self.down = nn.ModuleList(ConvBlock(enc[i], enc[i + 1], f"channels[{i + 1}]") for i in range(4))
        below = [enc[4], *dec[:3]]
        skips = [enc[3], enc[2], enc[1], enc[0]]
        self.up = nn.ModuleList(ConvBlock(below[i] + skips[i], dec[i], f"channels[{i + 5}]") for i in range(4))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)

    @property
    def global_channels(self) -> int:
        return self.channels[4]

    @property
    def local_channels(self) -> int:
        return self.channels[8]

    def _encoder(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        """Every encoder level of ``x`` padded to a multiple of 16, and the padding before each axis."""
        check_volume(x, "UNet3D input", self.in_channels)
        pad = [(-s) % _DIVISOR for s in x.shape[2:]]
        before = [p // 2 for p in pad]
        # F.pad lists the last axis first.
        x = F.pad(x, [v for d in (2, 1, 0) for v in (before[d], pad[d] - before[d])])
        levels = [self.stem(x)]
        for block in self.down:
            levels.append(block(F.max_pool3d(levels[-1], 2)))
        return levels, before

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The global feature f^g alone (the decoder is not run): what encoder-only pretext tasks train."""
        return self._encoder(x)[0][-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        skips, before = self._encoder(x)
        global_feature = skips.pop()
        h = global_feature
        for block in self.up:
            h = F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=True)
            h = block(torch.cat([skips.pop(), h], dim=1))
        local_feature = h[
            :, :, before[0] : before[0] + size[0], before[1] : before[1] + size[1], before[2] : before[2] + size[2]
        ]
        return global_feature, local_feature


class LocalFeatureUNet(UNet3D):
    """A :class:`UNet3D` whose ``forward`` returns the local feature f^l alone, (B, channels[8], D, H, W).

    The same parameters (and state-dict keys) as :class:`UNet3D`: the network of an exported MONAI
    Bundle (:mod:`gvsl.export`), since MONAI's bundle checks and inferers expect one output tensor.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[1]
