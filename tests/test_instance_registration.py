"""Per-pair registration by optimisation (gvsl.instance_registration): it registers a known shift, scores as the
head's evaluation does, and a pair's result does not depend on the pairs beside it."""

import numpy as np
import pytest
import torch

from gvsl.data import Case
from gvsl.instance_registration import InstanceSettings, register_instances
from gvsl.pretext import heldout_pairs

SHAPE = (16, 16, 16)
FAST = InstanceSettings(affine_steps=60, deformable_steps=30)


def blob_case(name, centre):
    """A smooth two-class ellipsoid (its image blurred, so NCC has a gradient beyond the edges)."""
    grid = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float32) for s in SHAPE), indexing="ij"))
    radius = np.sqrt(
        (((grid - np.reshape(centre, (3, 1, 1, 1))) / np.reshape([4.0, 3.5, 3.0], (3, 1, 1, 1))) ** 2).sum(0)
    )
    label = (radius < 1).astype(np.uint8)
    label[:, : int(centre[1])][label[:, : int(centre[1])] > 0] = 2
    image = np.exp(-(radius**2)).astype(np.float32) + 0.3 * (label == 2)
    return Case(name, image, label, None, np.eye(4))


def test_a_known_shift_is_registered_far_better_than_no_registration():
    pairs = heldout_pairs([blob_case("a", (8, 8, 8)), blob_case("b", (10, 7, 6.5))], SHAPE)
    scores = register_instances(pairs, FAST)
    assert scores.identity_dice.max() < 0.55
    assert (scores.affine_dice > scores.identity_dice + 0.25).all(), scores
    assert (scores.warped_dice > scores.identity_dice + 0.25).all(), scores
    assert (scores.ncc < scores.identity_ncc - 0.1).all(), scores


def test_a_pairs_result_does_not_depend_on_the_pairs_beside_it():
    cases = [blob_case("a", (8, 8, 8)), blob_case("b", (10, 7, 6.5)), blob_case("c", (7, 9, 9))]
    together = register_instances(heldout_pairs(cases, SHAPE), FAST)
    alone = register_instances(heldout_pairs(cases[:2], SHAPE).subset(slice(0, 1)), FAST)
    # the batch's float sums differ from one pair's, nothing else does
    assert torch.allclose(together.ncc[0], alone.ncc[0], atol=1e-4)
    assert abs(float(together.warped_dice[0]) - float(alone.warped_dice[0])) < 0.02


@pytest.mark.parametrize("field, value", [("affine_steps", -1), ("deformable_lr", 0.0), ("translation_unit", -2.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        InstanceSettings(**{field: value})
