"""Held-out registration (gvsl.pretext): pairs, Dice against an independent reference, a known shift."""

import numpy as np
import pytest
import torch
from torch import nn

from gvsl.data import Case
from gvsl.errors import GVSLInputError
from gvsl.nets import GVSL
from gvsl.nets.gvsl_network import GVSLOutput
from gvsl.pretext import evaluate_pretext, heldout_pairs

SHAPE = (16, 16, 16)


def ball(centre, radius=4.0, shape=SHAPE):
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    return (np.sqrt(((grid - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0)) < radius).astype(np.uint8)


def case(name, centre, labelled=True):
    label = ball(centre)
    # two classes: the ball's upper half is class 2
    label[..., 8:] *= 2
    image = (0.2 + 0.3 * label).astype(np.float32)
    return Case(name, image, label if labelled else None, None, np.eye(4))


def numpy_dice(a, b, classes=(1, 2)):
    return np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in classes])


class Shift(nn.Module):
    """A stand-in Z-matching model whose field moves every voxel by a fixed number of voxels."""

    z_matching = True

    def __init__(self, shift):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.shift = torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1)

    def forward(self, fixed, moving):
        from gvsl.geometry import warp

        ddf = self.shift.expand(fixed.shape[0], 3, *fixed.shape[2:]).contiguous()
        return GVSLOutput(warped=warp(moving, ddf), ddf=ddf)


def test_pairs_are_ordered_different_subjects_seeded_and_resized():
    cases = [case(f"c{i}", (8, 8, 8)) for i in range(4)]
    every = heldout_pairs(cases, SHAPE)
    assert len(every) == 12 and all(a != b for a, b in every.ids)
    some, again = heldout_pairs(cases, SHAPE, pairs=5, seed=3), heldout_pairs(cases, SHAPE, pairs=5, seed=3)
    assert some.ids == again.ids and len(set(some.ids)) == 5
    assert heldout_pairs(cases, SHAPE, pairs=5, seed=4).ids != some.ids
    resized = heldout_pairs(cases[:2], (12, 20, 16))
    assert resized.fixed.shape == resized.fixed_labels.shape == (2, 1, 12, 20, 16)
    assert resized.num_classes == 3
    unlabelled = heldout_pairs([case("a", (8, 8, 8), False), case("b", (8, 8, 8))], SHAPE)
    assert not unlabelled.labelled and unlabelled.num_classes == 0
    with pytest.raises(GVSLInputError, match="at least two cases"):
        heldout_pairs(cases[:1], SHAPE)
    with pytest.raises(GVSLInputError, match="pairs must be >= 1"):
        heldout_pairs(cases, SHAPE, pairs=0)


def test_identity_model_scores_the_unregistered_pairs():
    cases = [case("a", (7, 8, 8)), case("b", (9, 8, 9)), case("c", (8, 6, 8))]
    pairs = heldout_pairs(cases, SHAPE)
    scores = evaluate_pretext(GVSL(channels=(8,) * 9, affine_channels=8, local_head_channels=8), pairs)
    # a fresh head starts at the identity: nothing moves
    torch.testing.assert_close(scores.warped_dice, scores.identity_dice)
    torch.testing.assert_close(scores.affine_dice, scores.identity_dice)
    torch.testing.assert_close(scores.ncc, scores.identity_ncc, atol=1e-4, rtol=0)
    expected = [numpy_dice(cases[j].label, cases[i].label) for i, j in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]]
    np.testing.assert_allclose(scores.identity_dice.numpy(), expected, rtol=1e-5)
    assert set(scores.summary()) == {"ncc", "identity_ncc", "identity_dice", "affine_dice", "warped_dice"}


def test_a_field_that_undoes_the_offset_registers_perfectly():
    fixed, moving = case("fixed", (8, 8, 8)), case("moving", (8, 10, 8))
    pairs = heldout_pairs([fixed, moving], SHAPE).subset(slice(0, 1))  # fixed = "fixed", moving = "moving"
    # backward map: fixed voxel p samples moving at p + (0, 2, 0), where the moving ball sits
    scores = evaluate_pretext(Shift((0.0, 2.0, 0.0)), pairs)
    assert float(scores.warped_dice) == pytest.approx(1.0)
    assert float(scores.identity_dice) == pytest.approx(numpy_dice(moving.label, fixed.label))
    assert float(scores.identity_dice) < 0.8
    assert float(scores.ncc) < float(scores.identity_ncc)
    assert scores.affine_dice is None and "affine_dice" not in scores.summary()


def test_a_model_trained_with_mutual_information_is_scored_by_both_similarities():
    from gvsl.losses import mutual_information_loss

    fixed, moving = case("fixed", (8, 8, 8)), case("moving", (8, 10, 8))
    pairs = heldout_pairs([fixed, moving], SHAPE).subset(slice(0, 1))
    ncc_only, both = (
        evaluate_pretext(Shift((0.0, 2.0, 0.0)), pairs),
        evaluate_pretext(Shift((0.0, 2.0, 0.0)), pairs, similarity="mi"),
    )
    # the NCC and the Dice are what they are under "ncc": the yardstick every run shares
    for name, value in ncc_only.summary().items():
        assert both.summary()[name] == value
    assert set(both.summary()) - set(ncc_only.summary()) == {"mi", "identity_mi"}
    assert float(both.identity_mi) == pytest.approx(float(mutual_information_loss(pairs.moving, pairs.fixed)))
    assert float(both.mi) < float(both.identity_mi)  # registered: more information shared
    with pytest.raises(GVSLInputError, match=r"similarity: unknown 'ssim'; valid: \['ncc', 'mi'\]"):
        evaluate_pretext(Shift((0.0, 2.0, 0.0)), pairs, similarity="ssim")


def test_evaluation_leaves_the_model_and_random_state_alone():
    model = GVSL(channels=(8,) * 9, affine_channels=8, local_head_channels=8)
    pairs = heldout_pairs([case("a", (7, 8, 8)), case("b", (9, 8, 9))], SHAPE)
    before = torch.get_rng_state()
    evaluate_pretext(model, pairs)
    assert model.training and torch.equal(before, torch.get_rng_state())
    with pytest.raises(GVSLInputError, match="needs a Z-matching head"):
        evaluate_pretext(GVSL.variant("no_zmatch", channels=(8,) * 9, local_head_channels=8), pairs)


class FixedAffine(nn.Module):
    """A stand-in Z-matching model whose affine head outputs given matrices, in order, pair after pair."""

    z_matching = True

    def __init__(self, affines):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.affines, self.used = affines, 0
        self.config = type("Config", (), {"affine": True})()

    def forward(self, fixed, moving):
        from gvsl.geometry import affine_to_ddf, warp

        affine = self.affines[self.used : self.used + fixed.shape[0]]
        self.used += fixed.shape[0]
        ddf = affine_to_ddf(affine, fixed.shape[2:])
        return GVSLOutput(warped=warp(moving, ddf), ddf=ddf, affine=affine)


def test_a_known_misalignment_is_drawn_seeded_one_per_subject_and_undone_by_its_inverse():
    from gvsl.geometry import identity_affine
    from gvsl.pretext import evaluate_misalignment, misaligned_pairs

    cases = [case(f"c{i}", (8 + i % 2, 8, 7 + i)) for i in range(3)]
    pairs = heldout_pairs(cases, SHAPE)
    known, undo = misaligned_pairs(pairs, seed=1)
    again, undo_again = misaligned_pairs(pairs, seed=1)
    assert [a for a, _ in known.ids] == ["c0", "c1", "c2"] and torch.equal(undo, undo_again)
    assert torch.equal(known.moving, again.moving) and not torch.equal(undo, misaligned_pairs(pairs, seed=2)[1])
    # the moved copy differs from its subject, and the inverse brings it back (up to interpolation)
    oracle = evaluate_misalignment(FixedAffine(undo), known, undo)
    still = evaluate_misalignment(FixedAffine(identity_affine(len(known))), known, undo)
    assert torch.allclose(oracle.error_affine, torch.zeros(3), atol=1e-4)
    assert torch.all(still.error_affine == still.error_identity) and torch.all(still.error_identity > 0.5)
    assert torch.allclose(oracle.recovered, torch.ones(3), atol=1e-4) and torch.all(still.recovered == 0)
    assert torch.all(oracle.affine_dice > still.affine_dice)
    assert oracle.translation_correlation() == pytest.approx(1.0)
    summary = oracle.summary()
    assert summary["recovered"] == pytest.approx(1.0, abs=1e-4) and "translation_correlation" in summary
    # the moved labels are the subject's labels moved: the undo warps them back onto the subject
    assert torch.all(oracle.affine_dice > 0.8) and torch.all(still.affine_dice < oracle.affine_dice)


def test_the_known_misalignment_needs_an_affine_head():
    from gvsl.pretext import evaluate_misalignment, misaligned_pairs

    model = GVSL(channels=(8, 8, 8, 8, 8, 8, 8, 8, 8), affine=False)
    known, undo = misaligned_pairs(heldout_pairs([case("a", (8, 8, 8)), case("b", (7, 8, 8))], SHAPE))
    with pytest.raises(GVSLInputError, match="needs an affine head"):
        evaluate_misalignment(model, known, undo)
