"""Held-out evaluation during pre-training: every ``eval_every`` iterations the method's loss on subjects the
run never trains on (``heldout_loss/``), for a Z-matching head their registration (``heldout/``,
``pretext.json``; :mod:`gvsl.pretext`), and for an affine head how much of a known misalignment of each
held-out subject it undoes (``misalignment/``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import Crops, PretrainMethod
from gvsl.pretext import HeldOutPairs, evaluate_misalignment, evaluate_pretext, heldout_pairs, misaligned_pairs
from gvsl.runtime import autocast, channels_last
from gvsl.settings import Bounds, Checked, OneOf

__all__ = ["HELDOUT_LOG", "HELDOUT_LOSS_LOG", "PRETEXT_NAME", "HeldoutEvaluation", "HeldoutSettings", "load_heldout"]

PRETEXT_NAME = "pretext.json"
HELDOUT_LOG = "heldout"
HELDOUT_LOSS_LOG = "heldout_loss"
MISALIGNMENT_LOG = "misalignment"
#: fixed seed of the held-out loss's augmentations: every evaluation sees the same inputs
_HELDOUT_SEED = 12345


@dataclass(kw_only=True)
class HeldoutSettings(Checked):
    """Held-out pairs registered during pre-training: subjects of a prepared task's split, never trained on.

    Args:
        task: the prepared task (the paper's MM-WHS validation subjects: SHC).
        split: ``train`` or ``val`` (``test`` is Table 1's).
        pairs: ordered pairs of different subjects.
    """

    task: str = "SHC"
    split: Annotated[str, OneOf(("train", "val"))] = "val"
    pairs: Annotated[int, Bounds(1, integer=True)] = 20


def load_heldout(data: str | Path, split: str, crop: Sequence[int], pairs: int, seed: int = 0) -> HeldOutPairs:
    """Held-out pairs from ``split`` of a prepared dataset (labels, when it has them, give the Dice)."""
    from gvsl.data import load_prepared

    if split == "test":
        raise GVSLInputError("held-out split must not be 'test': the test split is for Table 1")

    dataset = load_prepared(data)
    cases = dataset.load_split(split)
    if len(cases) < 2:
        raise GVSLInputError(f"{data}: the {split} split has {len(cases)} case(s); held-out evaluation needs two")
    classes = len(dataset.info.classes) + 1 if dataset.info.task_type == "segmentation" else None
    return heldout_pairs(cases, crop, pairs, seed, num_classes=classes)


class HeldoutEvaluation:
    """One run's held-out evaluation (main process only), logged to its DVCLive ``live``.

    A resumed run keeps the first registration of the run it continues (``pretext.json`` at
    ``pretext_path``, written before that run's first iteration). The held-out loss runs at the training
    precision (it is the training loss on other subjects); the registrations are scored without autocast, in
    fp32, so that their Dice does not depend on the device's precision.
    """

    def __init__(
        self,
        live: Any,
        method: PretrainMethod,
        model: torch.nn.Module,
        heldout: HeldOutPairs,
        batch_size: int,
        device: torch.device,
        pretext_path: Path,
        resumed: bool,
        precision: str = "auto",
    ):
        self.live, self.method, self.model, self.heldout, self.precision = live, method, model, heldout, precision
        self.batch_size, self.device, self.pretext_path = batch_size, device, pretext_path
        self.registers = method.registers
        # the registration's own similarity is scored beside the NCC (GVSL's option; other methods have none)
        self.similarity = getattr(method.options, "similarity", "ncc")
        self.crops = method.heldout_crops(heldout)
        self.first = _read_pretext(pretext_path, heldout) if resumed and self.registers else None
        has_affine = self.registers and bool(getattr(getattr(model, "config", None), "affine", False))
        # the same known misalignments in every run and evaluation: drawn from a fixed seed
        self.known = misaligned_pairs(heldout, seed=_HELDOUT_SEED) if has_affine else None

    def __call__(self, done: int) -> None:
        """Evaluate after ``done`` iterations (0: before the first)."""
        _log_heldout_loss(
            self.live, self.method, self.model, self.crops, self.batch_size, self.device, done, self.precision
        )
        if self.registers:
            scores = _log_heldout(self.live, self.model, self.heldout, done, self.similarity)
            if self.known is not None:
                scores["misalignment"] = _log_misalignment(self.live, self.model, *self.known)
            if done == 0:
                self.first = scores
            _write_pretext(self.pretext_path, self.heldout, self.first, scores)


@torch.no_grad()
def _log_heldout_loss(
    live: Any,
    method: PretrainMethod,
    model: torch.nn.Module,
    crops: Crops,
    batch_size: int,
    device: torch.device,
    done: int,
    precision: str = "auto",
) -> None:
    """The method's loss terms on the held-out crops, logged under ``heldout_loss/``: in chunks of at least
    one step's size (a contrastive loss depends on its batch), weighted by chunk size, with augmentations
    from a fixed seed so that every evaluation sees the same inputs, at the training precision."""
    generator = torch.Generator().manual_seed(_HELDOUT_SEED)
    chunks = max(1, len(crops) // method.crops_per_step(batch_size))
    sums: dict[str, float] = {}
    for part in torch.tensor_split(torch.arange(len(crops)), chunks):
        chunk = crops[int(part[0]) : int(part[-1]) + 1].to(device)
        net_inputs, targets = method.inputs(chunk, generator)
        with autocast(device, precision):
            terms = method.loss(model(**channels_last(net_inputs, device)), channels_last(targets, device))
        for term, value in terms.as_floats().items():
            sums[term] = sums.get(term, 0.0) + value * len(part)
    live.step = done
    for term, value in sums.items():
        live.log_metric(f"{HELDOUT_LOSS_LOG}/{term}", value / len(crops))


def _log_heldout(
    live: Any, model: torch.nn.Module, heldout: HeldOutPairs, done: int, similarity: str = "ncc"
) -> dict[str, Any]:
    """Register the held-out pairs after ``done`` iterations and log the means under ``heldout/``."""
    scores = evaluate_pretext(model, heldout, similarity=similarity)
    means = scores.summary()
    live.step = done
    for name, value in means.items():
        live.log_metric(f"{HELDOUT_LOG}/{name}", value)
    return {"iteration": done, "mean": means, "per_pair": scores.per_pair()}


def _log_misalignment(live: Any, model: torch.nn.Module, known: HeldOutPairs, undo: torch.Tensor) -> dict[str, Any]:
    """Undo the known misalignments with the affine head and log the means under ``misalignment/``."""
    scores = evaluate_misalignment(model, known, undo)
    means = scores.summary()
    for name, value in means.items():
        live.log_metric(f"{MISALIGNMENT_LOG}/{name}", value)
    return {"mean": means, "per_pair": scores.per_pair(), "subjects": [fixed for fixed, _ in known.ids]}


def _write_pretext(path: Path, heldout: HeldOutPairs, first: Mapping[str, Any], last: Mapping[str, Any]) -> None:
    record = {"pairs": [list(p) for p in heldout.ids], "first": first, "last": last, "iterations": last["iteration"]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def _read_pretext(path: Path, heldout: HeldOutPairs) -> dict[str, Any]:
    """The first evaluation of the run being resumed (written before its first iteration)."""
    if not path.is_file():
        raise GVSLInputError(
            f"{path}: missing; a run with held-out evaluation writes it before its first "
            "iteration, so this checkpoint comes from a run without it (resume without held-out "
            "pairs, or start afresh)"
        )
    record = json.loads(path.read_text())
    if record["pairs"] != [list(p) for p in heldout.ids]:
        raise GVSLInputError(f"{path}: was evaluated on other held-out pairs than this run's")
    return record["first"]
