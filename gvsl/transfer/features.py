"""Local feature vectors per structure, for the t-SNE of paper Fig. 7."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gvsl.errors import GVSLInputError
from gvsl.nets.unet import UNet3D
from gvsl.runtime import resolve_device
from gvsl.transfer.cases import Case, _prepare

__all__ = ["extract_local_features", "local_features"]


def extract_local_features(
    backbone: UNet3D, cases: Sequence[Case], max_per_class: int = 200, seed: int = 0, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Local feature vectors f^l sampled per foreground structure, for the t-SNE of paper Fig. 7.

    For every foreground class, ``min(max_per_class, voxels of that class over all cases)`` voxels
    are drawn uniformly without replacement from all cases together (seeded by ``seed``); each
    case then goes once, whole, through a copy of ``backbone`` (in ``eval()`` mode, on ``device``)
    and the drawn voxels' feature vectors are gathered. Background (class 0) is not sampled.

    Returns:
        features: float32 (N, channels[8]); labels: int64 (N,) class ids, grouped by ascending class.

    Raises:
        GVSLInputError: a case without label, or no foreground voxel in any case.
    """
    if max_per_class < 1:
        raise GVSLInputError(f"max_per_class must be >= 1, got {max_per_class}")
    if not cases:
        raise GVSLInputError("extract_local_features: no cases given")
    for case in cases:
        if case.label is None:
            raise GVSLInputError(f"case {case.id!r}: feature sampling needs a label volume, got None")
    # Any class id is accepted here: the label range only bounds the check in _prepare.
    num_classes = max(int(np.max(case.label)) for case in cases) + 1
    prepared = _prepare(cases, "feature", backbone.in_channels, "segmentation", max(num_classes, 2))
    classes = sorted({int(v) for c in prepared for v in torch.unique(c.label).tolist()} - {0})
    if not classes:
        raise GVSLInputError(f"extract_local_features: no foreground voxel in any of the {len(cases)} case(s)")

    generator = torch.Generator().manual_seed(seed)
    picks: list[list[tuple[int, torch.Tensor]]] = [[] for _ in prepared]  # per case: (class, flat voxel indices)
    for cls in classes:
        per_case = [torch.nonzero(c.label.flatten() == cls).flatten() for c in prepared]
        owner = torch.cat([torch.full((len(v),), i) for i, v in enumerate(per_case)])
        voxel = torch.cat(per_case)
        chosen = torch.randperm(len(voxel), generator=generator)[:max_per_class].sort().values
        for i in range(len(prepared)):
            mine = voxel[chosen][owner[chosen] == i]
            if len(mine):
                picks[i].append((cls, mine))

    torch_device = resolve_device(device)
    model = copy.deepcopy(backbone).to(torch_device).eval()
    gathered: dict[int, list[torch.Tensor]] = {cls: [] for cls in classes}
    with torch.no_grad():
        for case, case_picks in zip(prepared, picks):
            if not case_picks:
                continue
            local = model(case.image[None].to(torch_device))[1][0].flatten(1).float().cpu()  # (C, D·H·W)
            for cls, voxels in case_picks:
                gathered[cls].append(local[:, voxels].T)
    features = [torch.cat(gathered[cls]) for cls in classes]
    labels = [torch.full((len(f),), cls, dtype=torch.int64) for cls, f in zip(classes, features)]
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def local_features(
    pretrain_root: str | Path,
    pretrain_seed: int,
    methods: Sequence[str],
    dataset_path: str | Path,
    max_per_class: int = 150,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Local features of each method's backbone (of ``pretrain_seed``) at labelled voxels of the dataset's
    test cases; ``seed`` draws the voxels."""
    from gvsl.checkpoint import load_backbone
    from gvsl.data import load_prepared

    cases = load_prepared(dataset_path).load_split("test")
    features = {}
    for method in methods:
        path = Path(pretrain_root) / method / f"seed{pretrain_seed}" / "backbone.pt"
        if path.is_file():
            features[method] = extract_local_features(
                load_backbone(path), cases, max_per_class=max_per_class, seed=seed
            )
    return features
