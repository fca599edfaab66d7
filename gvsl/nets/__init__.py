"""Networks: the GVSL backbone and heads."""

from gvsl.nets.gvsl_heads import AffineHead, DeformableHead, RestorationHead
from gvsl.nets.gvsl_network import GVSL, VARIANTS, GVSLConfig, GVSLOutput
from gvsl.nets.unet import PAPER_CHANNELS, ConvBlock, LocalFeatureUNet, UNet3D, parse_channels

__all__ = [
    "GVSL",
    "PAPER_CHANNELS",
    "VARIANTS",
    "AffineHead",
    "ConvBlock",
    "DeformableHead",
    "GVSLConfig",
    "GVSLOutput",
    "LocalFeatureUNet",
    "RestorationHead",
    "UNet3D",
    "parse_channels",
]
