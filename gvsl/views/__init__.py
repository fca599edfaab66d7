"""The views GVSL trains on: an appearance-corrupted x_A and one random spatial transform shared by three volumes.

Per step (paper Sec. 3; the authors' ``Train_GVSL.py``): t'(x_A) is x_A after Models-Genesis appearance
transforms (local pixel shuffling, a Bézier intensity curve, in-painting, optionally out-painting); one
random spatial transform (affine, then elastic) then moves x_A, t'(x_A) and x_B identically. The model
sees t'(x_A) and x_B; spatial(x_A) is the target of both the restoration and the NCC loss.

All randomness comes from an explicit ``torch.Generator`` (its state is checkpointed, so a resumed run
draws the same views); numbers are drawn on the generator's device and moved to the data's. Every
transform returns new tensors and never writes into its input.

- :mod:`~gvsl.views.appearance` — the appearance corruption t' (:class:`AppearanceTransform`).
- :mod:`~gvsl.views.spatial` — the shared spatial transform (:class:`RandSpatialTransform`).
- :mod:`~gvsl.views.step` — one step's :class:`Views` (:func:`make_views`) and their timing.
- :mod:`~gvsl.views.draws` — the random draws and input checks both transforms use.

Adapted from: Zhou et al., "Models Genesis", MedIA 2021 (appearance transforms); He et al., CVPR 2023,
and the authors' ``utils/Transform_self.py`` (ranges, elastic field, order of the transforms).
"""

from gvsl.views.appearance import AppearanceTransform, bezier_intensity_curve, bezier_intensity_map
from gvsl.views.spatial import RandSpatialTransform, elastic_displacement, elastic_smoothing_matrix
from gvsl.views.step import Views, make_views, time_augmentation

__all__ = [
    "AppearanceTransform",
    "RandSpatialTransform",
    "Views",
    "bezier_intensity_curve",
    "bezier_intensity_map",
    "elastic_displacement",
    "elastic_smoothing_matrix",
    "make_views",
    "time_augmentation",
]
