"""GVSL's registration similarity on brain MR: local NCC (the paper) against mutual information (``mi``).

The authors' issue #7 reports that on MRI GVSL's NCC term "did not learn anything" and suggests mutual
information. This pre-trains whole GVSL with ``similarity: ncc`` and ``similarity: mi`` (same seeds, the
default profile's schedule: 400 iterations, batch 2, widths 8–128, Adam warmed up to 1e-3 over 40 iterations
then a cosine decay) on the mni-brain cohort (:mod:`gvsl.data.cohorts.brain`), in two regimes:

* ``t1``: the cohort as generated: every subject a T1 with its own bias field (±15–25 %), tissue contrast
  (CSF ±15 %, GM and WM ±5 %), gamma (0.8–1.25) and Rician noise;
* ``mixed``: the same subjects, each then given a contrast of its own, as a pool of scans from several
  sequences would have: a piecewise-linear intensity curve sends the cohort's median CSF, GM and WM
  intensities to levels drawn uniformly in [0.15, 1] (any order: T1-, T2- and PD-like contrasts mixed;
  background stays dark), then a further smooth multiplicative bias field of ±30–45 %, then min-max. Applied
  here, to every image of the regime (pre-training, held-out and SBM subjects), so the cohort generator and
  its outputs stay as they are.

and reports per run (a) the held-out registration: the warped-label Dice of the 12 ordered pairs of the SBM
analog's 4 validation subjects (:func:`gvsl.pretext.evaluate_pretext`; 7 tissue × region classes), against no
registration, and (b) the SBM linear probe (:func:`gvsl.transfer.run_transfer` with the default profile's
linear-probe settings; whole volumes, 8 train / 4 val / 43 test subjects), beside scratch's probe.

The settings are the default profile's (``params.yaml``, or ``--params``): the SBM analog's grid and seed,
the widths, the pre-training schedule and the linear probe (the README's numbers were measured with those of
commit e4a5aa6, which the settings refactor left unchanged). Pre-training subjects are mni-brain seed 1
(48 subjects, all splits), disjoint from the SBM analog's (seed 0). The volumes are the SBM analog's (6 mm, a
28 × 34 × 28 brain-centred ROI), so the pre-training crop is 28 × 32 × 28 (the network pads it to 32³, as it
does the default's 32³ crops).

    .venv/bin/python benchmarks/similarity_mr.py                     # 2 regimes × 2 similarities × 2 seeds
    .venv/bin/python benchmarks/similarity_mr.py --seeds 0 --regimes t1 --iterations 50   # a quick check

One process at one thread, as the pipeline's workers run. Two seeds show nothing statistically: the table
gives the per-seed differences so that a reader sees their spread, not an interval.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gvsl.checkpoint import load_backbone
from gvsl.data import Case, load_prepared, prepare
from gvsl.data.cohorts.brain import BRAIN_CLASSES, CLASS_TISSUE
from gvsl.nets.unet import UNet3D
from gvsl.pipeline import PARAMS, Settings, load_settings
from gvsl.pretext import heldout_pairs
from gvsl.pretrain import PretrainConfig, pretrain
from gvsl.transfer import TransferConfig, num_outputs, run_transfer

ROOT = Path(__file__).resolve().parents[1]
REGIMES = ("t1", "mixed")
SIMILARITIES = ("ncc", "mi")
PRETRAIN_SUBJECTS = 48
PRETRAIN_COHORT_SEED = 1  # the SBM analog is prepare.seed 0: disjoint subject seeds
LEVEL_RANGE = (0.15, 1.0)
MIXED_BIAS_RANGE = (0.30, 0.45)


def _matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _tissue_levels(cases: list[Case]) -> np.ndarray:
    """Median intensity of CSF, GM and WM (cerebellum left out: it mixes GM and WM) over ``cases``."""
    levels = []
    for tissue in range(3):
        classes = [k for k, t in CLASS_TISSUE.items() if t == tissue]
        levels.append(np.median(np.concatenate([c.image[np.isin(c.label, classes)] for c in cases])))
    return np.asarray(levels, dtype=np.float64)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth field in [−1, 1]: three random cosines of at most one period across the volume."""
    grid = np.stack(np.meshgrid(*(np.linspace(0.0, 1.0, n) for n in shape), indexing="ij"))
    field = np.zeros(shape)
    for _ in range(3):
        frequency = rng.uniform(0.0, 1.0, size=(3, 1, 1, 1))
        field += np.cos(2 * np.pi * (frequency * grid).sum(0) + rng.uniform(0, 2 * np.pi))
    return field / np.abs(field).max()


def mixed_contrast(image: np.ndarray, case_id: str, levels: np.ndarray) -> np.ndarray:
    """The ``mixed`` regime's image of one subject (seeded by its id): a tissue-level curve, a bias field, min-max."""
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    targets = rng.uniform(*LEVEL_RANGE, size=3)
    order = np.argsort(levels)
    x = np.concatenate([[0.0], levels[order], [1.0]])
    y = np.concatenate([[0.0], targets[order], [targets[order][-1]]])
    curved = np.interp(image, x, y)
    bias = 1.0 + rng.uniform(*MIXED_BIAS_RANGE) * _smooth_field(rng, image.shape)
    out = curved * bias
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


def _cohorts(settings: Settings, work: Path) -> dict[str, dict[str, list[Case]]]:
    """Per regime: the pre-training subjects and the SBM analog's train / val / test splits."""
    sbm_request = settings.prepare.request("SBM")
    grid = {"shape": sbm_request.shape, "spacing": sbm_request.spacing, "progress": False}
    sbm = load_prepared(prepare(sbm_request.source, work / "SBM", task="SBM", seed=sbm_request.seed, **grid))
    pre = load_prepared(
        prepare("mni-brain", work / "pre", task="SBM", seed=PRETRAIN_COHORT_SEED, subjects=PRETRAIN_SUBJECTS, **grid)
    )
    t1 = {"pretrain": [c for split in ("train", "val", "test") for c in pre.load_split(split)]}
    t1.update({split: sbm.load_split(split) for split in ("train", "val", "test")})
    levels = _tissue_levels(t1["pretrain"])
    mixed = {
        group: [replace(c, image=mixed_contrast(c.image, f"{group}/{c.id}", levels)) for c in cases]
        for group, cases in t1.items()
    }
    return {"t1": t1, "mixed": mixed}


def _pretrain_config(
    settings: Settings, similarity: str, seed: int, crop: tuple[int, ...], iterations: int | None
) -> PretrainConfig:
    """The default profile's GVSL run of ``seed``, with ``similarity``, on ``crop``, fp32 on the CPU."""
    config = settings.pretrain_configs("gvsl")[0]
    iterations = iterations or config.iterations
    return replace(
        config,
        iterations=iterations,
        crop=crop,
        warmup=min(config.warmup, iterations // 10),
        seed=seed,
        checkpoint_every=iterations,
        eval_every=iterations,  # before the first iteration and after the last
        device="cpu",
        precision="fp32",
        options={**config.options, "similarity": similarity},
    )


def _probe(settings: Settings, backbone: UNet3D, cases: dict[str, list[Case]], seed: int) -> tuple[float, float, bool]:
    """Test mean Dice (%) of the SBM linear probe, its seconds and whether it plateaued."""
    config = TransferConfig.from_dict(
        {
            **settings.transfer.linear.schedule("SBM"),
            "task": "segmentation",
            "protocol": "linear",
            "crop": cases["train"][0].image.shape[-3:],
            "num_classes": num_outputs("segmentation", BRAIN_CLASSES),
            "seed": seed,
            "device": "cpu",
        }
    )
    result = run_transfer(
        backbone,
        cases["train"],
        cases["val"],
        cases["test"],
        config,
        class_names=["background", *BRAIN_CLASSES],
        progress=False,
    )
    return 100 * result.test["mean_dice"], result.seconds, result.converged


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--similarities", nargs="+", choices=SIMILARITIES, default=list(SIMILARITIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int, help="pre-training iterations (default: the profile's)")
    parser.add_argument("--params", type=Path, default=ROOT / PARAMS, help="the settings (default params.yaml)")
    parser.add_argument("--crop", type=int, nargs=3, default=[28, 32, 28])
    parser.add_argument("--no-scratch", action="store_true", help="skip scratch's probes")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    args.iterations = args.iterations or settings.pretrain.iterations
    torch.set_num_threads(1)
    gflops = _matmul_gflops()
    began = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cohorts = _cohorts(settings, work)
        for regime in args.regimes:
            cases = cohorts[regime]
            held = heldout_pairs(cases["val"], args.crop, num_classes=len(BRAIN_CLASSES) + 1)
            for seed in args.seeds:
                if not args.no_scratch:
                    torch.manual_seed(seed)
                    dice, seconds, converged = _probe(settings, UNet3D(1, settings.model.channels), cases, seed)
                    rows.append(
                        {
                            "regime": regime,
                            "init": "scratch",
                            "seed": seed,
                            "probe": dice,
                            "probe_s": seconds,
                            "probe_converged": converged,
                        }
                    )
                    print(f"{regime} scratch seed {seed}: probe {dice:.1f} % ({seconds:.0f} s)", flush=True)
                for similarity in args.similarities:
                    config = _pretrain_config(settings, similarity, seed, tuple(args.crop), args.iterations)
                    out = work / f"{regime}-{similarity}-{seed}"
                    volumes = [c.image for c in cases["pretrain"]]
                    result = pretrain(volumes, out, config, progress=False, heldout=held)
                    pretext = json.loads((out / "pretext.json").read_text())
                    first, last = pretext["first"]["mean"], pretext["last"]["mean"]
                    dice, seconds, converged = _probe(settings, load_backbone(out / "backbone.pt"), cases, seed)
                    row = {
                        "regime": regime,
                        "init": similarity,
                        "seed": seed,
                        "identity_dice": 100 * last["identity_dice"],
                        "affine_dice": 100 * last["affine_dice"],
                        "warped_dice": 100 * last["warped_dice"],
                        "ncc_first": first["ncc"],
                        "ncc_last": last["ncc"],
                        "mi_first": first.get("mi"),
                        "mi_last": last.get("mi"),
                        "pretrain_s": result.seconds,
                        "probe": dice,
                        "probe_s": seconds,
                        "probe_converged": converged,
                    }
                    rows.append(row)
                    print(
                        f"{regime} {similarity} seed {seed}: held-out Dice {row['identity_dice']:.1f} → "
                        f"{row['warped_dice']:.1f} %, NCC loss {row['ncc_first']:.3f} → {row['ncc_last']:.3f}, "
                        f"probe {dice:.1f} % (pre-training {result.seconds:.0f} s, probe {seconds:.0f} s)",
                        flush=True,
                    )
    total = time.perf_counter() - began
    _print_table(rows, args, gflops, total)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "gflops": gflops, "seconds": total}, indent=1) + "\n")


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.1f}" if values else "—"


def _print_table(rows: list[dict], args, gflops: float, total: float) -> None:
    print(
        f"\nwhole GVSL, {args.iterations} iterations, crop {tuple(args.crop)}, "
        f"seeds {args.seeds}; "
        f"one thread (fp32 matmul {gflops:.0f} GFLOP/s at one thread); {total / 60:.1f} min in all\n"
    )
    header = (
        f"{'regime':7s} {'similarity':10s} {'Dice none':>9s} {'affine':>7s} {'warped':>7s} {'gain':>6s} "
        f"{'NCC loss':>14s} {'SBM probe':>9s} {'per seed (probe)':>20s} {'s/run':>6s}"
    )
    print(header)
    print("-" * len(header))
    for regime in args.regimes:
        for init in ("scratch", *args.similarities):
            runs = [r for r in rows if r["regime"] == regime and r["init"] == init]
            if not runs:
                continue
            seeds = " ".join(f"{r['probe']:.1f}" for r in runs)
            if init == "scratch":
                print(
                    f"{regime:7s} {init:10s} {'':>9s} {'':>7s} {'':>7s} {'':>6s} {'':>14s} "
                    f"{_mean(r['probe'] for r in runs):>9s} {seeds:>20s} {'':>6s}"
                )
                continue
            gain = _mean(r["warped_dice"] - r["identity_dice"] for r in runs)
            ncc = f"{np.mean([r['ncc_first'] for r in runs]):.3f}→{np.mean([r['ncc_last'] for r in runs]):.3f}"
            print(
                f"{regime:7s} {init:10s} {_mean(r['identity_dice'] for r in runs):>9s} "
                f"{_mean(r['affine_dice'] for r in runs):>7s} {_mean(r['warped_dice'] for r in runs):>7s} "
                f"{gain:>6s} {ncc:>14s} {_mean(r['probe'] for r in runs):>9s} {seeds:>20s} "
                f"{np.mean([r['pretrain_s'] for r in runs]):6.0f}"
            )
        by = {(r["init"], r["seed"]): r for r in rows if r["regime"] == regime}
        pairs = [(by[("mi", s)], by[("ncc", s)]) for s in args.seeds if ("mi", s) in by and ("ncc", s) in by]
        if pairs:
            warped = ", ".join(f"{m['warped_dice'] - n['warped_dice']:+.1f}" for m, n in pairs)
            probe = ", ".join(f"{m['probe'] - n['probe']:+.1f}" for m, n in pairs)
            print(f"{regime:7s} mi − ncc per seed: held-out warped Dice {warped}; SBM probe {probe} (points)")
    print("\nDice in %, means over seeds; 'gain' = warped − none on the 12 held-out pairs; NCC loss first→last.")


if __name__ == "__main__":
    main()
