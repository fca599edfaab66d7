"""Cases for transfer: checks and conversion to tensors, centre crops, and the random training crops.

Training crops, where the paper is silent: a case is drawn uniformly; with probability 1/2 the crop
is centred on a voxel of a foreground class present in the case (class drawn uniformly, then voxel
uniformly, as nnU-Net's foreground oversampling does), otherwise it is placed uniformly. A crop
larger than a training volume is an error, never padded silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gvsl.data import Case
from gvsl.errors import GVSLInputError
from gvsl.transfer.config import TransferConfig

# one Case for prepared datasets and for transfer (gvsl.data.Case), importable from here too
__all__ = ["Case", "label_subset"]

#: Probability that a segmentation training crop is centred on a foreground voxel.
FOREGROUND_PROBABILITY = 0.5


def label_subset(cases: Sequence[Case], fraction: float, seed: int) -> list[Case]:
    """The labelled training cases a run of ``fraction`` of them uses: nested and seeded.

    The cases are put in an order drawn from ``seed``, and a fraction takes the first ``ceil(fraction · n)``
    of them (at least one), so a smaller fraction's cases are among every larger one's of the same seed.
    Classification draws within each target, so that every fraction keeps both classes. The cases keep
    their order in ``cases``; ``fraction`` 1 is every case.
    """
    if not 0 < fraction <= 1:
        raise GVSLInputError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(cases)
    rng = np.random.default_rng(seed)
    targets = [case.target for case in cases]
    strata = sorted({t for t in targets if t is not None}) or [None]
    chosen: set[int] = set()
    for stratum in strata:
        members = [i for i, t in enumerate(targets) if t == stratum or stratum is None]
        order = rng.permutation(len(members))
        chosen.update(members[k] for k in order[: max(1, math.ceil(fraction * len(members)))])
    return [case for i, case in enumerate(cases) if i in chosen]


@dataclass
class _Prepared:
    """A checked case: image (C, D, H, W) float32, label (D, H, W) int64 or None."""

    id: str
    image: torch.Tensor
    label: torch.Tensor | None
    target: int | None


def _prepare(cases: Sequence[Case], split: str, in_channels: int, task: str, num_classes: int) -> list[_Prepared]:
    """Check ``cases`` for ``task`` and convert them to tensors; errors name the split and the case."""
    out = []
    for case in cases:
        where = f"{split} case {case.id!r}"
        image = torch.as_tensor(np.asarray(case.image, dtype=np.float32))
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4:
            raise GVSLInputError(
                f"{where}: expecting an image (D, H, W) or (C, D, H, W), got shape {tuple(image.shape)}"
            )
        if image.shape[0] != in_channels:
            raise GVSLInputError(
                f"{where}: the backbone expects {in_channels} channel(s), the image has {image.shape[0]}"
            )
        if not torch.isfinite(image).all():
            raise GVSLInputError(f"{where}: image holds NaN or Inf voxels")
        label, target = None, None
        if task == "segmentation":
            if case.label is None:
                raise GVSLInputError(f"{where}: segmentation needs a label volume, got None")
            label_array = np.asarray(case.label)
            if label_array.shape != tuple(image.shape[1:]):
                raise GVSLInputError(
                    f"{where}: label shape {label_array.shape} differs from image shape {tuple(image.shape[1:])}"
                )
            if not np.issubdtype(label_array.dtype, np.integer):
                raise GVSLInputError(f"{where}: label must hold integer class ids, got dtype {label_array.dtype}")
            values = np.unique(label_array)
            bad = values[(values < 0) | (values >= num_classes)]
            if bad.size:
                raise GVSLInputError(
                    f"{where}: label values {bad.tolist()} outside 0..{num_classes - 1} (num_classes={num_classes})"
                )
            label = torch.as_tensor(label_array.astype(np.int64))
        else:
            if case.target not in (0, 1) or isinstance(case.target, str):
                raise GVSLInputError(f"{where}: classification needs a target of 0 or 1, got {case.target!r}")
            target = int(case.target)
        out.append(_Prepared(str(case.id), image.contiguous(), label, target))
    return out


def _center_crop(image: torch.Tensor, crop: Sequence[int]) -> torch.Tensor:
    """Centre crop of the last three axes to at most ``crop`` (axes already smaller are kept whole)."""
    starts = [max(s - c, 0) // 2 for s, c in zip(image.shape[-3:], crop)]
    ends = [st + min(s, c) for st, s, c in zip(starts, image.shape[-3:], crop)]
    return image[..., starts[0] : ends[0], starts[1] : ends[1], starts[2] : ends[2]]


class _CropSampler:
    """Random training crops (see the module docstring), drawn from one seeded generator."""

    def __init__(self, cases: list[_Prepared], config: TransferConfig, generator: torch.Generator):
        self.cases = cases
        self.crop = config.crop
        self.segmentation = config.task == "segmentation"
        self.generator = generator
        for case in cases:
            shape = tuple(case.image.shape[1:])
            if any(c > s for c, s in zip(self.crop, shape)):
                raise GVSLInputError(
                    f"training case {case.id!r}: crop {self.crop} is larger than the volume {shape}; "
                    "lower 'crop' or resample the data"
                )
        # Foreground classes present in each case (none for classification: crops are uniform).
        self.foreground = [
            [v for v in torch.unique(c.label).tolist() if v != 0] if self.segmentation else [] for c in cases
        ]

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.generator))

    def _start(self, index: int) -> list[int]:
        case, shape = self.cases[index], self.cases[index].image.shape[1:]
        classes = self.foreground[index]
        if classes and float(torch.rand(1, generator=self.generator)) < FOREGROUND_PROBABILITY:
            voxels = torch.nonzero(case.label == classes[self._randint(len(classes))])
            centre = voxels[self._randint(len(voxels))].tolist()
            return [min(max(p - c // 2, 0), s - c) for p, c, s in zip(centre, self.crop, shape)]
        return [self._randint(s - c + 1) for s, c in zip(shape, self.crop)]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, *crop) and segmentation labels (B, *crop) or classification targets (B, 1)."""
        images, labels = [], []
        for _ in range(batch):
            index = self._randint(len(self.cases))
            d, h, w = self._start(index)
            window = (slice(d, d + self.crop[0]), slice(h, h + self.crop[1]), slice(w, w + self.crop[2]))
            case = self.cases[index]
            images.append(case.image[(slice(None), *window)])
            labels.append(case.label[window] if self.segmentation else torch.tensor([float(case.target)]))
        return torch.stack(images), torch.stack(labels)
