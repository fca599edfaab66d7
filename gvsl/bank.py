"""The pre-training volumes in memory, and the crops each pre-training method draws from them per step.

Three ways of drawing, one per kind of pretext task: single crops (restoration, rotation,
clustering), pairs of different subjects cut at one position (GVSL's Z-matching) and two
overlapping crops of one volume (the views of contrastive and Siamese methods).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from gvsl.errors import GVSLInputError

__all__ = ["VolumeBank"]


class VolumeBank:
    """Pre-training volumes cached in memory, cropped as single crops (``sample_crops``), pairs of different
    subjects at one position (``sample_pairs``) or two overlapping crops of one volume (``sample_views``).

    For GVSL's pairs: the authors feed whole volumes, so x_A and x_B always share one field of view. A crop keeps that
    property only if both images are cut at the same place: ``sample_pairs`` draws one normalised
    position per pair, a fraction of each axis' free range (volume size − crop size), and cuts both
    volumes there; for volumes of one shape (the generated cohorts) the crops coincide. An optional
    jitter moves x_B's crop by up to ``jitter`` voxels per axis.

    Args:
        volumes: arrays (D, H, W) or (C, D, H, W), intensities already normalised.
        ids: a name per volume for error messages.
    """

    def __init__(self, volumes: Sequence[np.ndarray | torch.Tensor], ids: Sequence[str] | None = None):
        ids = list(ids) if ids is not None else [f"volume {i}" for i in range(len(volumes))]
        if len(volumes) < 2:
            raise GVSLInputError(
                f"pre-training needs at least two volumes (pairs of different subjects), got {len(volumes)}"
            )
        self.ids = ids
        self.volumes = []
        for vid, v in zip(ids, volumes):
            t = torch.as_tensor(np.asarray(v, dtype=np.float32))
            if t.ndim == 3:
                t = t[None]
            if t.ndim != 4:
                raise GVSLInputError(
                    f"{vid}: expecting a 3-D volume (D, H, W) or (C, D, H, W), got shape {tuple(t.shape)}"
                )
            if not torch.isfinite(t).all():
                raise GVSLInputError(f"{vid}: holds NaN or Inf voxels")
            self.volumes.append(t.contiguous())
        channels = {t.shape[0] for t in self.volumes}
        if len(channels) != 1:
            raise GVSLInputError(f"volumes disagree on channel count: {sorted(channels)}")
        self.channels = channels.pop()

    def digest(self) -> str:
        """A digest of every volume's shape and voxels, in order: which data a run trained on."""
        hasher = hashlib.blake2b(digest_size=16)
        for volume in self.volumes:
            hasher.update(str(tuple(volume.shape)).encode())
            hasher.update(volume.numpy().tobytes())
        return hasher.hexdigest()

    def check_crop(self, crop: Sequence[int]) -> None:
        for vid, t in zip(self.ids, self.volumes):
            if any(c > s for c, s in zip(crop, t.shape[1:])):
                raise GVSLInputError(f"{vid}: crop {tuple(crop)} is larger than the volume {tuple(t.shape[1:])}")

    def crop_start(
        self, index: int, crop: Sequence[int], position: Sequence[float], offset: Sequence[int] = (0, 0, 0)
    ) -> tuple[int, int, int]:
        """Corner of the crop of volume ``index`` at normalised ``position`` in [0, 1) per axis (each of the
        ``size − crop + 1`` corners equally likely for a uniform position), moved by ``offset`` voxels and
        kept inside the volume."""
        shape = self.volumes[index].shape[1:]
        return tuple(
            min(max(math.floor(p * (s - c + 1)) + o, 0), s - c)  # type: ignore[return-value]
            for p, s, c, o in zip(position, shape, crop, offset)
        )

    def _crop(self, index: int, crop: Sequence[int], start: Sequence[int]) -> torch.Tensor:
        t = self.volumes[index]
        return t[:, start[0] : start[0] + crop[0], start[1] : start[1] + crop[1], start[2] : start[2] + crop[2]]

    def sample_pairs(
        self, batch: int, crop: Sequence[int], generator: torch.Generator, jitter: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, *crop) crops of x_A and x_B, each pair from two different volumes at one normalised position."""
        n = len(self.volumes)
        first = torch.randint(0, n, (batch,), generator=generator)
        # Shift by 1..n-1 so x_B is always another subject.
        second = (first + torch.randint(1, n, (batch,), generator=generator)) % n
        positions = torch.rand(batch, 3, generator=generator, dtype=torch.float64).tolist()
        offsets = (
            torch.randint(-jitter, jitter + 1, (batch, 3), generator=generator).tolist()
            if jitter
            else [(0, 0, 0)] * batch
        )
        x_a = torch.stack(
            [self._crop(int(i), crop, self.crop_start(int(i), crop, p)) for i, p in zip(first, positions)]
        )
        x_b = torch.stack(
            [
                self._crop(int(j), crop, self.crop_start(int(j), crop, p, o))
                for j, p, o in zip(second, positions, offsets)
            ]
        )
        return x_a, x_b

    def sample_crops(
        self, batch: int, crop: Sequence[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, list[tuple[int, tuple[int, int, int]]]]:
        """(B, C, *crop) crops of volumes drawn uniformly, each at a uniform position, with their (volume, corner)."""
        chosen = torch.randint(0, len(self.volumes), (batch,), generator=generator).tolist()
        positions = torch.rand(batch, 3, generator=generator, dtype=torch.float64).tolist()
        places = [(int(i), self.crop_start(int(i), crop, p)) for i, p in zip(chosen, positions)]
        return self.crops_at(places, crop), places

    def crops_at(self, places: Sequence[tuple[int, Sequence[int]]], crop: Sequence[int]) -> torch.Tensor:
        """(N, C, *crop) crops at given (volume index, corner) places."""
        return torch.stack([self._crop(index, crop, start) for index, start in places])

    def sample_views(
        self, batch: int, crop: Sequence[int], generator: torch.Generator, shift: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (B, C, *crop) crops per drawn volume: one at a uniform position, the other moved by up to
        ``shift`` voxels per axis (kept inside the volume), so the two views overlap."""
        first, places = self.sample_crops(batch, crop, generator)
        offsets = torch.randint(-shift, shift + 1, (batch, 3), generator=generator).tolist()
        shape = [self.volumes[index].shape[1:] for index, _ in places]
        moved = [
            (index, tuple(min(max(s + o, 0), size - c) for s, o, size, c in zip(start, offset, dims, crop)))
            for (index, start), offset, dims in zip(places, offsets, shape)
        ]
        return first, self.crops_at(moved, crop)
