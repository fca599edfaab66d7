"""Models Genesis (Zhou et al., "Models Genesis", MedIA 2021; MICCAI 2019): restore a crop from its
corruption by the full transform set, through the U-Net decoder.

Per sample, as the authors' ``generate_pair`` and its default config: flips of crop and target alike
(up to three times, each with p 0.4, along a random axis), then local pixel shuffling (p 0.5), a
non-linear Bézier intensity curve (p 0.9; decreasing, an inversion, half of those times) and, with
p 0.9, painting: out-painting in 80 % of those cases, otherwise in-painting of up to 5 boxes of
sides 1/6–1/3 (the transforms of :class:`gvsl.views.AppearanceTransform`). Loss: MSE between the
sigmoid output and the clean crop.

How it differs from GVSL's "w/o Z-Matching" ablation, which also only restores: that one trains on
GVSL's views (its appearance probabilities, no out-painting, then GVSL's affine + elastic spatial
transform on input and target) with GVSL's restoration head (3×3×3 conv, GroupNorm, LeakyReLU,
1×1×1 conv, no sigmoid); Models Genesis keeps the geometry (flips only), out-paints, and restores
through a single 1×1×1 sigmoid layer.

Deviations: crops of the kit's volumes instead of the authors' 64×64×32 cubes chosen by an
intensity rule; local pixel shuffling permutes a fraction of tiles of side max(2, size/20) (the
mean side of the authors' 10 000 blocks of random sides up to size/10) instead of 10 000 random,
overlapping blocks; ``shuffle_fraction`` 0.85 is the share of the authors' cube those blocks cover
(1 − exp(−10 000 · 3.5 · 3.5 · 2 / (64 · 64 · 32))); the decreasing curve reverses the sorted y
table rather than leaving it unsorted; one optimiser and schedule for all methods (the authors use
SGD with plateau decay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gvsl.methods.augment import random_flips
from gvsl.methods.options import MethodOptions, Probability
from gvsl.methods.restoration import RestorationMethod
from gvsl.views import AppearanceTransform

__all__ = ["ModelsGenesis", "ModelsGenesisOptions"]


@dataclass
class ModelsGenesisOptions(MethodOptions):
    """Probabilities of Models Genesis' transforms (the authors' defaults)."""

    flip_prob: Probability = 0.4
    local_shuffle_prob: Probability = 0.5
    shuffle_fraction: Probability = 0.85
    nonlinear_prob: Probability = 0.9
    invert_prob: Probability = 0.5
    paint_prob: Probability = 0.9
    outpaint_share: Probability = 0.8


class ModelsGenesis(RestorationMethod):
    key = "models_genesis"
    title = "Models Genesis"
    Options = ModelsGenesisOptions

    def __init__(self, options: Mapping | None = None):
        super().__init__(options)
        o = self.options
        outpaint = o.paint_prob * o.outpaint_share
        # AppearanceTransform paints out with p_out, otherwise in with p_in: p_in = P(in) / P(not out)
        inpaint = o.paint_prob * (1 - o.outpaint_share) / (1 - outpaint) if outpaint < 1 else 0.0
        self.corruption = AppearanceTransform(
            local_shuffle_prob=o.local_shuffle_prob,
            nonlinear_prob=o.nonlinear_prob,
            inpaint_prob=inpaint,
            outpaint_prob=outpaint,
            max_inpaint_blocks=5,
            shuffle_fraction=o.shuffle_fraction,
            inpaint_sides=(1 / 6, 1 / 3),
            invert_prob=o.invert_prob,
        )

    def target(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # flips move crop and target alike: the flipped crop is what the network restores
        (target,) = random_flips(generator, crops, probability=self.options.flip_prob)
        return target

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.corruption(clean, generator)
