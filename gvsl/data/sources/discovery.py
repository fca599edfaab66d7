"""Finding a real dataset's files: visible files only, one file per case id, image/label pairs by name."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from gvsl.data.io import Volume, check_label_values, check_same_grid, read_volume, volume_suffix
from gvsl.errors import GVSLInputError

__all__ = ["case_id", "match_pairs", "read_pair", "source_paths", "unique_ids", "visible"]


def visible(paths: Iterable[Path]) -> list[Path]:
    """Drop hidden files and macOS resource forks (``._name``) that archives often carry."""
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def unique_ids(pairs: dict[str, Path], path: Path, case: str) -> None:
    """Record ``path`` as case ``case``; a second file of one case is an error naming both."""
    if case in pairs:
        raise GVSLInputError(f"{path}: case {case} also found at {pairs[case]}")
    pairs[case] = path


def source_paths(root: Path, image: Path, label: Path | None = None) -> dict[str, str]:
    """Where a case's files are, relative to the dataset's ``root``: what its manifest row records."""
    paths = {"source_image": str(image.relative_to(root))}
    if label is not None:
        paths["source_label"] = str(label.relative_to(root))
    return paths


def case_id(path: Path) -> str:
    """The file name without its volume suffix (``.nii.gz``, ``.nrrd``, …)."""
    suffix = volume_suffix(path) or path.suffix
    return path.name[: -len(suffix)] if suffix else path.name


def match_pairs(
    root: Path,
    image_re: str,
    label_re: str,
    what: str,
    label_dir: Callable[[Path], bool] = lambda p: True,
    image_dir: Callable[[Path], bool] = lambda p: True,
) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) for every image under ``root`` whose name matches ``image_re``.

    ``image_re``/``label_re`` capture the case id in group 1. Images without a label are skipped
    with a warning; none at all is an error naming the folder and the patterns.
    """
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in visible(root.rglob("*")):
        if (m := re.fullmatch(label_re, path.name)) and label_dir(path):
            unique_ids(labels, path, m.group(1))
        elif (m := re.fullmatch(image_re, path.name)) and image_dir(path):
            unique_ids(images, path, m.group(1))
    if not images:
        raise GVSLInputError(f"{root}: no {what} images found (looked for files named /{image_re}/)")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        warnings.warn(
            f"{root}: skipping {len(unlabelled)} {what} image(s) without a label "
            f"(/{label_re}/): {', '.join(unlabelled[:5])}{', …' if len(unlabelled) > 5 else ''}",
            stacklevel=3,
        )
    pairs = [(cid, images[cid], labels[cid]) for cid in sorted(images) if cid in labels]
    if not pairs:
        raise GVSLInputError(f"{root}: no {what} image has a label (looked for files named /{label_re}/)")
    return pairs


def read_pair(image_path: Path, label_path: Path, allowed: Iterable[int]) -> tuple[Volume, Volume]:
    """An image and its label, checked to share one grid and to hold only ``allowed`` label values."""
    image = read_volume(image_path)
    label = read_volume(label_path, kind="label")
    check_same_grid(image, label)
    check_label_values(label, allowed)
    return image, label
