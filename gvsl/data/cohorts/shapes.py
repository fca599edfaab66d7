"""Implicit shapes evaluated at every voxel centre, in world millimetres: the anatomy primitives of the
generated chest CT (:mod:`gvsl.data.cohorts.phantom`).

A shape is a function of the voxel-centre coordinates (:class:`Points`, three arrays of the volume's
shape in some frame): an ellipsoid's normalised radius, the inside of a tube along a polyline. Frames
are placed by a rotation and a centre; a smooth random field (cubic splines on a coarse lattice)
deforms them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from gvsl.data.cohorts.splines import upsample_lattice

__all__ = ["Points", "ellipsoid", "frame", "rotation", "smooth_field", "tube"]


class Points:
    """Voxel-centre coordinates in mm (three arrays of the volume's shape) in some frame."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x, self.y, self.z = x, y, z

    def transformed(self, rotation: np.ndarray, centre: Sequence[float], scale: float = 1.0) -> Points:
        """Coordinates in a frame placed at ``centre`` with axes ``rotation`` (rows) and unit ``scale`` mm."""
        dx, dy, dz = self.x - centre[0], self.y - centre[1], self.z - centre[2]
        rows = [(r[0] * dx + r[1] * dy + r[2] * dz) / scale for r in rotation]
        return Points(*rows)


def ellipsoid(p: Points, centre: Sequence[float], radii: Sequence[float], axes: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius: < 1 inside an ellipsoid with semi-axes ``radii`` along ``axes`` (rows)."""
    q = p.transformed(np.eye(3) if axes is None else axes, centre)
    return (q.x / radii[0]) ** 2 + (q.y / radii[1]) ** 2 + (q.z / radii[2]) ** 2


def tube(p: Points, path: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """Inside a tube of ``radius`` mm around the polyline ``path`` (round caps)."""
    path = np.asarray(path, np.float32)
    low, high = path.min(axis=0) - radius, path.max(axis=0) + radius
    # only points in the path's bounding box can be inside: most of the volume is skipped
    near = (p.x >= low[0]) & (p.x <= high[0]) & (p.y >= low[1]) & (p.y <= high[1]) & (p.z >= low[2]) & (p.z <= high[2])
    px, py, pz = p.x[near], p.y[near], p.z[near]
    best = np.full(px.shape, np.inf, dtype=np.float32)
    for a, b in itertools.pairwise(path):
        ab = b - a
        ax, ay, az = px - a[0], py - a[1], pz - a[2]
        t = np.clip((ax * ab[0] + ay * ab[1] + az * ab[2]) / float(ab @ ab), 0.0, 1.0)
        d2 = (ax - t * ab[0]) ** 2 + (ay - t * ab[1]) ** 2 + (az - t * ab[2]) ** 2
        np.minimum(best, d2, out=best)
    inside = np.zeros(p.x.shape, dtype=bool)
    inside[near] = best <= radius**2
    return inside


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """R_z · R_y · R_x of angles (radians) about the x, y and z axes."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )


def frame(long_axis: Sequence[float]) -> np.ndarray:
    """Orthonormal rows (long axis, then two perpendiculars) with the long axis first."""
    a = np.asarray(long_axis, float) / np.linalg.norm(long_axis)
    b = np.cross(a, (0.0, 0.0, 1.0))
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)])


def smooth_field(rng: np.random.Generator, shape: Sequence[int], coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: Gaussian noise on a ``coarse``³ lattice, cubic-spline interpolated to ``shape``."""
    return upsample_lattice(rng.normal(0.0, amplitude, size=(coarse, coarse, coarse)), shape, prefilter=True).astype(
        np.float32
    )
