"""Smooth random fields for the generated cohorts: a coarse lattice upsampled by cubic splines.

Cubic-spline interpolation is separable, so upsampling applies one (size × lattice) matrix per axis:
the same numbers as ``scipy.ndimage.map_coordinates(order=3)`` on the lattice at a fraction of the
cost (the matrices are cached per shape).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["upsample_lattice"]


@functools.lru_cache(maxsize=64)
def _upsampling_matrix(coarse: int, size: int, prefilter: bool) -> np.ndarray:
    # the lattice's end points fall on the volume's end voxels
    positions = np.linspace(0.0, coarse - 1.0, size)[None]
    return np.stack(
        [
            ndimage.map_coordinates(basis, positions, order=3, mode="nearest", prefilter=prefilter)
            for basis in np.eye(coarse)
        ],
        axis=1,
    )


def upsample_lattice(lattice: np.ndarray, shape: Sequence[int], *, prefilter: bool) -> np.ndarray:
    """Upsample the last ``len(shape)`` axes of ``lattice`` to ``shape`` by cubic splines.

    Args:
        lattice: values on the coarse lattice; leading axes (one field per index) are kept.
        shape: output size of the trailing axes.
        prefilter: ``True`` interpolates the lattice values (the field passes through them);
            ``False`` treats them as B-spline coefficients, so every output is a convex combination
            of them and stays within their range.
    """
    first = lattice.ndim - len(shape)
    for axis, size in enumerate(shape, start=first):
        matrix = _upsampling_matrix(lattice.shape[axis], int(size), prefilter)
        lattice = np.moveaxis(np.tensordot(matrix, lattice, axes=(1, axis)), 0, axis)
    return lattice
