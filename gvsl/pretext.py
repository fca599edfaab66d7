"""The pretext task measured on held-out pairs: does the Z-matching head register subjects it never saw?

Pre-training minimises the NCC loss on the pairs it trains on, which says little about whether the
network learned to register. :func:`evaluate_pretext` runs a GVSL model's Z-matching head on a fixed
set of pairs of held-out subjects (:class:`HeldOutPairs`, e.g. the SHC analog's validation split) and
reports, per pair:

* the NCC loss of the warped moving image against the fixed image (and of the unwarped one), whatever
  similarity the model trained with, so that runs compare on one yardstick; a model trained with mutual
  information (``GVSLOptions.similarity = "mi"``) also gets the MI loss of both;
* when the subjects have labels, the atlas-registration Dice: the moving subject's labels warped
  onto the fixed grid against the fixed subject's labels, for no warp (identity), the affine part
  alone and the whole fused field.

Between two subjects the true transform is unknown, so the affine head is also tested on a *known*
misalignment (:func:`misaligned_pairs`, :func:`evaluate_misalignment`): each held-out subject against a
copy of itself moved by a drawn affine, whose inverse the head should output. The score is how much of
the known displacement the head's affine removes, and how its translation tracks the true one.

No augmentation and no random draw is involved, so evaluating never changes a training run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.transforms import ResizeWithPadOrCrop

from gvsl.data import Case
from gvsl.errors import GVSLInputError
from gvsl.geometry import affine_from_parameters, affine_to_ddf, warp, warp_affine
from gvsl.losses import SIMILARITIES, local_ncc_loss, mutual_information_loss
from gvsl.nets import GVSL

__all__ = [
    "HeldOutPairs",
    "MisalignmentScores",
    "PretextScores",
    "evaluate_misalignment",
    "evaluate_pretext",
    "heldout_pairs",
    "misaligned_pairs",
    "registration_example",
    "score_registration",
]


@dataclass
class HeldOutPairs:
    """Fixed pairs of held-out subjects, each pair (fixed, moving) of two different cases.

    Attributes:
        fixed, moving: (N, 1, D, H, W) float32 images.
        fixed_labels, moving_labels: (N, 1, D, H, W) int64 label maps, or None (then NCC only).
        num_classes: label classes including background (0 when unlabelled).
        ids: (fixed id, moving id) per pair.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: torch.Tensor | None
    moving_labels: torch.Tensor | None
    num_classes: int
    ids: list[tuple[str, str]]

    @property
    def labelled(self) -> bool:
        return self.fixed_labels is not None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: slice) -> HeldOutPairs:
        """The pairs ``index`` selects (a slice), sharing storage."""

        def take(t):
            return None if t is None else t[index]

        return HeldOutPairs(
            self.fixed[index],
            self.moving[index],
            take(self.fixed_labels),
            take(self.moving_labels),
            self.num_classes,
            self.ids[index],
        )


def heldout_pairs(
    cases: Sequence[Case], crop: Sequence[int], pairs: int | None = None, seed: int = 0, num_classes: int | None = None
) -> HeldOutPairs:
    """Draw ``pairs`` ordered pairs of different cases, seeded; all of them (in ``itertools.permutations``
    order) when ``pairs`` is None or at least their number.

    Each case is centre-cropped or zero-padded to ``crop`` (MONAI ``ResizeWithPadOrCrop``), the size
    the network trains on. Labels are used only if every case has them.

    Args:
        cases: the held-out subjects.
        crop: (D, H, W) every image is brought to.
        pairs: how many ordered pairs.
        seed: seed of the choice of pairs.
        num_classes: label classes including background; default the largest label + 1.

    Raises:
        GVSLInputError: fewer than two cases, ``pairs`` < 1, or a labelled case without foreground in the crop.
    """
    if len(cases) < 2:
        raise GVSLInputError(f"held-out evaluation needs at least two cases, got {len(cases)}")
    if pairs is not None and pairs < 1:
        raise GVSLInputError(f"held-out pairs must be >= 1, got {pairs}")
    every = list(itertools.permutations(range(len(cases)), 2))
    if pairs is not None and pairs < len(every):
        order = np.random.default_rng(seed).permutation(len(every))[:pairs]
        every = [every[i] for i in sorted(order)]
    resize = ResizeWithPadOrCrop(tuple(int(c) for c in crop))
    images = [torch.as_tensor(resize(np.asarray(c.image, np.float32)[None])) for c in cases]
    labelled = all(c.label is not None for c in cases)
    labels = [torch.as_tensor(resize(np.asarray(c.label, np.int64)[None])).long() for c in cases] if labelled else None
    if labels:
        for c, label in zip(cases, labels):
            if not bool((label > 0).any()):
                # checked here, on every process, rather than found as a NaN Dice mid-training on one
                raise GVSLInputError(f"held-out case {c.id}: no foreground label inside the {tuple(crop)} crop")
        if num_classes is None:
            num_classes = int(max(int(t.max()) for t in labels)) + 1
    else:
        num_classes = 0
    fixed, moving = zip(*every)
    return HeldOutPairs(
        fixed=torch.stack([images[i] for i in fixed]).float(),
        moving=torch.stack([images[j] for j in moving]).float(),
        fixed_labels=torch.stack([labels[i] for i in fixed]) if labels else None,
        moving_labels=torch.stack([labels[j] for j in moving]) if labels else None,
        num_classes=num_classes,
        ids=[(cases[i].id, cases[j].id) for i, j in every],
    )


@dataclass
class PretextScores:
    """Per-pair held-out scores (tensors of length N); Dice entries are None without labels,
    ``affine_dice`` is None for a model without an affine head, and the MI losses are None unless the
    registration was scored with ``similarity="mi"``."""

    ncc: torch.Tensor
    identity_ncc: torch.Tensor
    identity_dice: torch.Tensor | None = None
    affine_dice: torch.Tensor | None = None
    warped_dice: torch.Tensor | None = None
    mi: torch.Tensor | None = None
    identity_mi: torch.Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Means over pairs, for logging (absent scores are left out)."""
        return {name: float(value.mean()) for name, value in vars(self).items() if value is not None}

    def per_pair(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in value] for name, value in vars(self).items() if value is not None}


def _mean_dice(warped_labels: torch.Tensor, fixed_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per pair: Dice averaged over the foreground classes present in the fixed subject."""
    dice = compute_dice(
        one_hot(warped_labels, num_classes),
        one_hot(fixed_labels, num_classes),
        include_background=False,
        ignore_empty=True,
    )
    return torch.nanmean(dice, dim=1)


def score_registration(
    pairs: HeldOutPairs,
    warped: torch.Tensor,
    ddf: torch.Tensor,
    affine: torch.Tensor | None = None,
    similarity: str = "ncc",
) -> dict[str, torch.Tensor]:
    """Per-pair scores of one registration of ``pairs`` (on the device of ``warped``): the NCC loss of the
    warped and of the unwarped moving image (with ``similarity="mi"`` their MI loss too), and with labels
    the Dice for no warp, the affine part alone (when ``affine`` is given) and the whole field ``ddf``. The
    :class:`PretextScores` fields."""
    if similarity not in SIMILARITIES:
        raise GVSLInputError(f"similarity: unknown {similarity!r}; valid: {list(SIMILARITIES)}")
    device = warped.device
    fixed, moving = pairs.fixed.to(device), pairs.moving.to(device)
    warped = warped.float()
    scores = {
        "ncc": torch.stack([local_ncc_loss(w[None], f[None]) for w, f in zip(warped, fixed)]),
        "identity_ncc": torch.stack([local_ncc_loss(m[None], f[None]) for m, f in zip(moving, fixed)]),
    }
    if similarity == "mi":
        scores["mi"] = torch.stack([mutual_information_loss(w[None], f[None]) for w, f in zip(warped, fixed)])
        scores["identity_mi"] = torch.stack([mutual_information_loss(m[None], f[None]) for m, f in zip(moving, fixed)])
    if pairs.labelled:
        fixed_labels = pairs.fixed_labels.to(device)
        moving_labels = pairs.moving_labels.to(device).float()
        scores["identity_dice"] = _mean_dice(moving_labels, fixed_labels, pairs.num_classes)
        scores["warped_dice"] = _mean_dice(warp(moving_labels, ddf.float(), "nearest"), fixed_labels, pairs.num_classes)
        if affine is not None:
            affine_ddf = affine_to_ddf(affine.float(), fixed.shape[2:])
            scores["affine_dice"] = _mean_dice(
                warp(moving_labels, affine_ddf, "nearest"), fixed_labels, pairs.num_classes
            )
    return scores


@torch.no_grad()
def evaluate_pretext(model: GVSL, pairs: HeldOutPairs, batch_size: int = 4, similarity: str = "ncc") -> PretextScores:
    """Register every held-out pair with ``model`` (fixed = clean image A, moving = image B).

    Args:
        model: a GVSL with a Z-matching head (not a DDP wrapper).
        pairs: from :func:`heldout_pairs`.
        batch_size: pairs per forward pass.
        similarity: the similarity the model trained with (``GVSLOptions.similarity``); the NCC loss is
            scored either way, the MI loss as well under ``mi``.

    Raises:
        GVSLInputError: the model has no Z-matching head.
    """
    if not model.z_matching:
        raise GVSLInputError("held-out registration needs a Z-matching head; this variant has none")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs.subset(slice(start, start + batch_size))
            out = model(chunk.fixed.to(device), chunk.moving.to(device))
            for name, value in score_registration(chunk, out.warped, out.ddf, out.affine, similarity).items():
                parts.setdefault(name, []).append(value.cpu())
    finally:
        model.train(was_training)
    # every fixed subject has foreground (heldout_pairs checks), so no Dice is NaN
    return PretextScores(**{name: torch.cat(values) for name, values in parts.items()})


#: bounds of the known misalignments: rotation about each axis (radians, 15°), isotropic scale, and
#: translation as a fraction of each side; of the order of the pose differences between phantom subjects
MISALIGNMENT = {"rotation": np.pi / 12, "scale": 0.15, "translation": 0.1}


def misaligned_pairs(pairs: HeldOutPairs, seed: int = 0) -> tuple[HeldOutPairs, torch.Tensor]:
    """Each distinct fixed subject of ``pairs`` against a copy of itself moved by a known affine.

    The copy is ``subject(T p)`` (labels by nearest neighbour), so the affine that registers it back is
    ``T⁻¹``. ``T`` is drawn, seeded, within :data:`MISALIGNMENT` (no shear).

    Returns:
        The pairs (fixed = subject, moving = moved copy) and the (N, 3, 4) affines ``T⁻¹`` that undo them.
    """
    first = {}
    for index, (fixed_id, _) in enumerate(pairs.ids):
        first.setdefault(fixed_id, index)
    index = torch.tensor(list(first.values()))
    fixed = pairs.fixed[index]
    n, shape = len(index), fixed.shape[2:]
    rng = np.random.default_rng(seed)

    def draw(bound: float, size: tuple[int, ...]) -> torch.Tensor:
        return torch.as_tensor(rng.uniform(-bound, bound, size=size), dtype=torch.float32)

    scale = 1 + draw(MISALIGNMENT["scale"], (n, 1)).expand(n, 3)
    # affine_from_parameters takes (x, y, z) = (W, H, D) translations
    translation = draw(MISALIGNMENT["translation"], (n, 3)) * torch.tensor(shape[::-1], dtype=torch.float32)
    moves = affine_from_parameters(draw(MISALIGNMENT["rotation"], (n, 3)), scale, translation, torch.zeros(n, 6))
    moving = warp_affine(fixed, moves)
    labels = None if pairs.fixed_labels is None else pairs.fixed_labels[index]
    moved_labels = None if labels is None else warp_affine(labels.float(), moves, "nearest").long()
    known = HeldOutPairs(
        fixed,
        moving,
        labels,
        moved_labels,
        pairs.num_classes,
        [(pairs.ids[i][0], f"{pairs.ids[i][0]} moved") for i in first.values()],
    )
    return known, _invert(moves)


def _invert(affine: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) ``[A | t]`` → ``[A⁻¹ | −A⁻¹ t]``."""
    linear = torch.linalg.inv(affine[:, :, :3].double())
    return torch.cat([linear, -linear @ affine[:, :, 3:].double()], dim=-1).float()


@dataclass
class MisalignmentScores:
    """Per pair of a known misalignment (tensors of length N).

    ``error_identity`` / ``error_affine``: mean distance (voxels) between the displacement that undoes
    the misalignment and no displacement / the affine head's, over the fixed subject's foreground (its
    whole grid without labels). ``recovered`` = 1 − error_affine / error_identity (1: exact, 0: no
    better than leaving it). ``true_translation`` / ``predicted_translation``: (N, 3) voxels.
    """

    error_identity: torch.Tensor
    error_affine: torch.Tensor
    true_translation: torch.Tensor
    predicted_translation: torch.Tensor
    identity_dice: torch.Tensor | None = None
    affine_dice: torch.Tensor | None = None

    @property
    def recovered(self) -> torch.Tensor:
        return 1 - self.error_affine / self.error_identity

    def translation_correlation(self) -> float:
        """Pearson correlation of predicted and true translations, all components pooled (NaN when the head
        outputs one translation for every pair)."""
        pooled = torch.stack([self.true_translation.flatten(), self.predicted_translation.flatten()]).double()
        return float(torch.corrcoef(pooled)[0, 1])

    def summary(self) -> dict[str, float]:
        """Means over pairs, and the translation correlation, for logging."""
        means = {
            name: float(value.mean())
            for name, value in vars(self).items()
            if value is not None and not name.endswith("translation")
        }
        return {
            **means,
            "recovered": float(self.recovered.mean()),
            "translation_correlation": self.translation_correlation(),
        }

    def per_pair(self) -> dict[str, list]:
        return {name: value.tolist() for name, value in vars(self).items() if value is not None}


@torch.no_grad()
def evaluate_misalignment(
    model: GVSL, known: HeldOutPairs, undo: torch.Tensor, batch_size: int = 4
) -> MisalignmentScores:
    """How well ``model``'s affine head undoes known misalignments (from :func:`misaligned_pairs`).

    Raises:
        GVSLInputError: the model has no affine head.
    """
    if not (model.z_matching and model.config.affine):
        raise GVSLInputError("the known-misalignment test needs an affine head; this variant has none")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(known), batch_size):
            chunk = slice(start, start + batch_size)
            fixed, moving = known.fixed[chunk].to(device), known.moving[chunk].to(device)
            predicted = model(fixed, moving).affine.float()
            true_ddf = affine_to_ddf(undo[chunk].to(device), fixed.shape[2:])
            affine_ddf = affine_to_ddf(predicted, fixed.shape[2:])
            region = known.fixed_labels[chunk] > 0 if known.labelled else torch.ones_like(fixed, dtype=torch.bool)
            region = region.to(device)[:, 0]
            for name, ddf in (("error_identity", torch.zeros_like(true_ddf)), ("error_affine", affine_ddf)):
                distance = (ddf - true_ddf).norm(dim=1)
                parts.setdefault(name, []).append(((distance * region).sum((1, 2, 3)) / region.sum((1, 2, 3))).cpu())
            parts.setdefault("true_translation", []).append(undo[chunk, :, 3])
            parts.setdefault("predicted_translation", []).append(predicted[:, :, 3].cpu())
            if known.labelled:
                moved_labels = known.moving_labels[chunk].to(device).float()
                fixed_labels = known.fixed_labels[chunk].to(device)
                parts.setdefault("identity_dice", []).append(
                    _mean_dice(moved_labels, fixed_labels, known.num_classes).cpu()
                )
                parts.setdefault("affine_dice", []).append(
                    _mean_dice(warp(moved_labels, affine_ddf, "nearest"), fixed_labels, known.num_classes).cpu()
                )
    finally:
        model.train(was_training)
    return MisalignmentScores(**{name: torch.cat(values) for name, values in parts.items()})


def registration_example(
    checkpoint_path: str | Path, dataset_path: str | Path, split: str = "val", ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Register two different cases with a pre-trained GVSL (fixed = image A, moving = image B).

    The cases are centre-cropped to the checkpoint's training crop, as the held-out evaluation does
    (:func:`gvsl.pretext.heldout_pairs`). No augmentation, eval mode. Returns the volumes (fixed,
    moving, warped), their label maps when
    the dataset has labels (the moving labels warped by nearest neighbour), the fused displacement
    field (3, D, H, W) in voxels, the NCC loss before and after, and the warped-label Dice before
    and after (percent, foreground classes).
    """
    from gvsl.checkpoint import load_file, load_pretrained_gvsl
    from gvsl.data import load_prepared

    state = load_file(checkpoint_path)
    model = load_pretrained_gvsl(state)
    if not model.z_matching:
        raise GVSLInputError(f"{checkpoint_path}: this variant has no Z-matching head; nothing registers")
    dataset = load_prepared(dataset_path)
    chosen = list(ids) if ids is not None else list(dataset.ids(split))[:2]
    if len(chosen) != 2 or chosen[0] == chosen[1]:
        raise GVSLInputError(f"registration_example needs two different cases, got {chosen}")
    cases = [dataset.load_case(i) for i in chosen]
    if cases[0].image.shape != cases[1].image.shape:
        raise GVSLInputError(f"cases {chosen} differ in shape: {cases[0].image.shape} vs {cases[1].image.shape}")
    # the field of view of the held-out evaluation: the training crop (centred), else the whole volume
    crop = state.get("config", {}).get("crop", cases[0].image.shape)
    pair = heldout_pairs(cases, crop, num_classes=len(dataset.info.classes) + 1).subset(slice(0, 1))
    model.eval()
    with torch.no_grad():
        out = model(pair.fixed, pair.moving)
    scores = evaluate_pretext(model, pair).summary()
    example = {
        "ids": chosen,
        "fixed": pair.fixed[0, 0].numpy(),
        "moving": pair.moving[0, 0].numpy(),
        "warped": out.warped[0, 0].numpy(),
        "ddf": out.ddf[0].numpy(),
        "ncc_before": scores["identity_ncc"],
        "ncc_after": scores["ncc"],
    }
    if pair.labelled:
        moving_label = pair.moving_labels[:1]
        example.update(
            fixed_label=pair.fixed_labels[0, 0].numpy(),
            moving_label=moving_label[0, 0].numpy(),
            warped_label=warp(moving_label.float(), out.ddf, "nearest")[0, 0].long().numpy(),
            dice_before=100 * scores["identity_dice"],
            dice_after=100 * scores["warped_dice"],
            num_classes=pair.num_classes,
        )
    return example
