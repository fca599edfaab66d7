"""gvsl — Geometric Visual Similarity Learning (He et al., CVPR 2023) for 3D medical images."""

__version__ = "0.1.0"
