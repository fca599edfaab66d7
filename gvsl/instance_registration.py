"""Per-pair registration by optimisation: the ceiling the learned Z-matching head is read against.

The Z-matching head *predicts* a registration in one forward pass (amortised over the subjects it trained
on). How good could a registration driven by the same objective be on the same held-out pairs?
:func:`register_instances` answers by optimising, for each pair on its own, first an affine (the affine
head's parameters: rotation, scale, translation, shear) and then a dense displacement on top of it, with
GVSL's own loss (local NCC, window 9, plus the smoothness term on the displacement, weights 1 and 1).

The kit's NCC and geometry are used rather than a registration package (ITK/elastix, ANTs): the ceiling
must be of the objective the head is trained with, on the same grid, interpolation and Dice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from gvsl.geometry import affine_from_parameters, affine_to_ddf, compose_affine_ddf, warp
from gvsl.losses import local_ncc_loss, smoothness_loss
from gvsl.methods.options import Bounds, MethodOptions
from gvsl.pretext import HeldOutPairs, PretextScores, score_registration

__all__ = ["InstanceSettings", "register_instances"]


@dataclass
class InstanceSettings(MethodOptions):
    """Adam steps and learning rates of the two stages; the loss weights are GVSL's (1, 1). Each field's bounds are
    checked when the settings are built, as a method's options are (:mod:`gvsl.methods.options`).

    The affine's translation is optimised in units of ``translation_unit`` voxels, so that one Adam step
    moves it about as far as it turns or scales the image.
    """

    affine_steps: Annotated[int, Bounds(0, integer=True)] = 200
    deformable_steps: Annotated[int, Bounds(0, integer=True)] = 200
    affine_lr: Annotated[float, Bounds(0.0, open_low=True)] = 0.02
    deformable_lr: Annotated[float, Bounds(0.0, open_low=True)] = 0.05
    translation_unit: Annotated[float, Bounds(0.0, open_low=True)] = 8.0
    ncc_window: Annotated[int, Bounds(1, integer=True)] = 9


def _optimise_affine(fixed: torch.Tensor, moving: torch.Tensor, settings: InstanceSettings) -> torch.Tensor:
    n, shape = len(fixed), fixed.shape[2:]
    rotation, scale, translation, shear = (torch.zeros(n, k, requires_grad=True) for k in (3, 3, 3, 6))
    optimiser = torch.optim.Adam([rotation, scale, translation, shear], lr=settings.affine_lr)

    def affine() -> torch.Tensor:
        return affine_from_parameters(rotation, 1 + scale, translation * settings.translation_unit, shear)

    for _ in range(settings.affine_steps):
        optimiser.zero_grad()
        # the loss is a mean over pairs; times n gives every pair the gradient it would get on its own
        loss = n * local_ncc_loss(warp(moving, affine_to_ddf(affine(), shape)), fixed, settings.ncc_window)
        loss.backward()
        optimiser.step()
    return affine().detach()


def _optimise_flow(
    fixed: torch.Tensor, moving: torch.Tensor, affine: torch.Tensor, settings: InstanceSettings
) -> torch.Tensor:
    flow = torch.zeros(len(fixed), 3, *fixed.shape[2:], requires_grad=True)
    optimiser = torch.optim.Adam([flow], lr=settings.deformable_lr)
    for _ in range(settings.deformable_steps):
        optimiser.zero_grad()
        loss = local_ncc_loss(warp(moving, compose_affine_ddf(affine, flow)), fixed, settings.ncc_window)
        loss = len(fixed) * (loss + smoothness_loss(flow))
        loss.backward()
        optimiser.step()
    return flow.detach()


def register_instances(pairs: HeldOutPairs, settings: InstanceSettings | None = None) -> PretextScores:
    """Register every pair of ``pairs`` by optimisation (on the CPU, in fp32) and score it as
    :func:`gvsl.pretext.evaluate_pretext` scores the head: ``affine_dice`` for the optimised affine alone,
    ``warped_dice`` and ``ncc`` for the affine and the displacement together.

    The pairs are optimised together in one batch; each pair's parameters see only its own loss (the batch
    loss is a sum over pairs), so a pair's result does not depend on the others'.
    """
    settings = InstanceSettings() if settings is None else settings
    fixed, moving = pairs.fixed.float(), pairs.moving.float()
    affine = _optimise_affine(fixed, moving, settings)
    ddf = compose_affine_ddf(affine, _optimise_flow(fixed, moving, affine, settings))
    with torch.no_grad():
        return PretextScores(**score_registration(pairs, warp(moving, ddf), ddf, affine))
