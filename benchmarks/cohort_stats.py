"""How much the generated cohorts leave to registration and to position, and what preparing them costs.

Prepares every task of ``params.yaml``'s ``prepare:`` group into a temporary folder (timing each), then prints:

(a) SHC: mean Dice of the seven heart structures between pairs of held-out subjects with no registration
    (identity), within the ROI as prepared and within the pre-training crop that the held-out registration
    evaluation (:func:`gvsl.pretext.heldout_pairs`: centre crop or pad) sees;
(b) SHC: how far each structure's centroid moves from case to case within the ROI (SD over cases, voxels and
    mm), and the labels' overall centroid;
(c) SBM: the same no-registration Dice, and per-voxel classifiers (nearest class mean) on intensity alone
    against intensity plus position.

    .venv/bin/python benchmarks/cohort_stats.py [--tasks SHC SBM] [--pairs 40]

Runs on whatever ``gvsl`` is importable (``PYTHONPATH=/path/to/other/checkout`` measures another commit).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from gvsl.data import load_prepared, prepare
from gvsl.pipeline import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _settings(task: str, settings: Settings) -> dict:
    request = settings.prepare.request(task)
    sizes = {k: getattr(request, k) for k in ("shape", "spacing", "roi_mm") if getattr(request, k) is not None}
    return {"source": request.source, "seed": request.seed, **sizes}


def _centre_crop(array: np.ndarray, crop: tuple[int, ...]) -> np.ndarray:
    """MONAI ResizeWithPadOrCrop's symmetric crop / pad, for a 3-D array."""
    out = array
    for axis, size in enumerate(crop):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
        elif n < size:
            before = (size - n) // 2
            pad = [(0, 0)] * 3
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad)
    return out


def _dice(a: np.ndarray, b: np.ndarray, classes: int) -> np.ndarray:
    scores = []
    for k in range(1, classes + 1):
        x, y = a == k, b == k
        total = x.sum() + y.sum()
        scores.append(2 * np.logical_and(x, y).sum() / total if total else np.nan)
    return np.array(scores)


def _pair_dice(labels: list[np.ndarray], classes: int, pairs: int, seed: int = 0) -> tuple[float, float, np.ndarray]:
    every = list(itertools.permutations(range(len(labels)), 2))
    order = np.random.default_rng(seed).permutation(len(every))[:pairs]
    per_pair = np.array([_dice(labels[every[i][0]], labels[every[i][1]], classes) for i in order])
    means = np.nanmean(per_pair, axis=1)
    return float(means.mean()), float(means.std()), np.nanmean(per_pair, axis=0)


def heart_stats(root: Path, crop: tuple[int, ...], pairs: int) -> None:
    ds = load_prepared(root)
    names = ds.info.classes
    cases = [c for split in ("val", "test") for c in ds.load_split(split) if split in ds.info.counts]
    labels = [np.asarray(c.label) for c in cases]
    spacing = np.array(ds.info.spacing)
    print(f"SHC: {len(cases)} held-out cases (val + test), ROI {labels[0].shape} at {tuple(spacing)} mm")
    mean, sd, per = _pair_dice(labels, len(names), pairs)
    print(f"(a) no-registration Dice, whole ROI, {pairs} pairs: {100 * mean:.1f} ± {100 * sd:.1f} %")
    print("    per structure: " + ", ".join(f"{n} {100 * d:.0f}" for n, d in zip(names, per)))
    cropped = [_centre_crop(label, crop) for label in labels]
    mean, sd, _ = _pair_dice(cropped, len(names), pairs)
    print(
        f"    within the {crop} pre-training crop (held-out registration's view): {100 * mean:.1f} ± {100 * sd:.1f} %"
    )
    print("(b) per-case centroid within the ROI: SD over cases (voxels / mm, per axis)")
    rows = []
    for k, name in enumerate(names, start=1):
        centroids = np.array([np.argwhere(label == k).mean(axis=0) for label in labels if (label == k).any()])
        sd = centroids.std(axis=0)
        rows.append(np.linalg.norm(sd))
        print(
            f"    {name:18s} mean {np.round(centroids.mean(axis=0), 1)} vox, SD {np.round(sd, 2)} vox "
            f"= {np.round(sd * spacing, 1)} mm"
        )
    overall = np.array([np.argwhere(label > 0).mean(axis=0) for label in labels])
    print(
        f"    all labels         SD {np.round(overall.std(axis=0), 2)} vox = "
        f"{np.round(overall.std(axis=0) * spacing, 1)} mm; mean over structures of |SD| {np.mean(rows):.2f} vox"
    )


def _nearest_mean(features: np.ndarray, target: np.ndarray, test_features: np.ndarray, classes: int) -> np.ndarray:
    means = np.stack([features[target == k].mean(axis=0) for k in range(classes + 1)])
    scale = features.std(axis=0) + 1e-6
    d = (((test_features[:, None, :] - means[None]) / scale) ** 2).sum(axis=2)
    return d.argmin(axis=1)


def brain_stats(root: Path, pairs: int) -> None:
    ds = load_prepared(root)
    names = ds.info.classes
    train, test = ds.load_split("train"), ds.load_split("test")
    print(f"SBM: {len(names)} classes {names}, ROI {np.asarray(test[0].label).shape} at {ds.info.spacing} mm")
    labels = [np.asarray(c.label) for c in test]
    mean, sd, per = _pair_dice(labels, len(names), pairs)
    print(f"(c) no-registration Dice between test subjects, {pairs} pairs: {100 * mean:.1f} ± {100 * sd:.1f} %")
    print("    per class: " + ", ".join(f"{n} {100 * d:.0f}" for n, d in zip(names, per)))

    def features(cases, with_position):
        out, target = [], []
        for c in cases:
            image = np.asarray(c.image, np.float32)
            grid = np.indices(image.shape).reshape(3, -1).T.astype(np.float32)
            f = [image.reshape(-1, 1)]
            if with_position:
                f.append(grid)
            out.append(np.concatenate(f, axis=1))
            target.append(np.asarray(c.label).reshape(-1))
        return np.concatenate(out), np.concatenate(target)

    for with_position, what in ((False, "intensity alone"), (True, "intensity + position")):
        x, y = features(train, with_position)
        scores = []
        for c in test:
            tx, ty = features([c], with_position)
            scores.append(np.nanmean(_dice(_nearest_mean(x, y, tx, len(names)), ty, len(names))))
        print(f"    nearest-class-mean per voxel, {what}: mean Dice {100 * np.mean(scores):.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["pretrain", "SHC", "SAC", "CCC", "SBM"])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="settings over the defaults")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--crop", type=int, nargs=3, default=(32, 32, 32), help="pre-training crop (held-out view)")
    args = parser.parse_args()
    params = load_settings(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        timings = {}
        for task in args.tasks:
            settings = _settings(task, params)
            start = time.perf_counter()
            out = prepare(settings.pop("source"), Path(tmp) / task, task=task, **settings)
            seconds = time.perf_counter() - start
            counts = load_prepared(out).info.counts
            n = sum(counts.values())
            timings[task] = seconds
            print(f"prepare {task}: {seconds:.1f} s for {n} subjects ({1000 * seconds / n:.0f} ms each) {counts}")
        print(f"prepare total: {sum(timings.values()):.1f} s")
        if "SHC" in args.tasks:
            heart_stats(Path(tmp) / "SHC", tuple(args.crop), args.pairs)
        if "SBM" in args.tasks:
            brain_stats(Path(tmp) / "SBM", args.pairs)


if __name__ == "__main__":
    main()
