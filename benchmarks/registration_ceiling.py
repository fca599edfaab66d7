"""How far GVSL's objective can register the held-out pairs, against how far the learned head does.

Loads the held-out pairs that pre-training registers (``params.yaml``: ``pretrain.heldout`` and
``pretrain.crop``), registers each pair by optimisation with GVSL's own loss
(:func:`gvsl.instance_registration.register_instances`: an affine, then a displacement on top of it), and
prints the mean Dice and NCC loss of no registration, the optimised affine alone and affine plus
displacement. With ``--runs``, the same pairs' scores of pre-trained runs (their ``pretext.json``, last
evaluation) are printed beside them.

    .venv/bin/python benchmarks/registration_ceiling.py [--data build/prepared/SHC] [--runs build/pretrain/gvsl/seed*]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gvsl.instance_registration import InstanceSettings, register_instances
from gvsl.pipeline import PARAMS, load_settings
from gvsl.pretrain.heldout import load_heldout

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    settings = load_settings(ROOT / PARAMS)
    heldout = settings.pretrain.heldout
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "build" / "prepared" / heldout.task,
        help="prepared dataset whose split holds the held-out subjects",
    )
    parser.add_argument("--split", default=heldout.split)
    parser.add_argument("--pairs", type=int, default=heldout.pairs)
    parser.add_argument("--crop", type=int, nargs=3, default=list(settings.pretrain.crop))
    parser.add_argument(
        "--steps",
        type=int,
        default=InstanceSettings.affine_steps,
        help="Adam steps of the affine and of the displacement, each",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=[],
        help="pre-training run folders whose held-out scores to print beside the ceiling",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    pairs = load_heldout(args.data, args.split, args.crop, args.pairs)
    start = time.perf_counter()
    scores = register_instances(pairs, InstanceSettings(affine_steps=args.steps, deformable_steps=args.steps))
    seconds = time.perf_counter() - start
    print(
        f"{len(pairs)} held-out pairs of {args.data.name}/{args.split}, crop {tuple(args.crop)}; "
        f"optimised in {seconds:.0f} s at 2 threads\n"
    )

    def dice(value) -> str:  # unlabelled held-out subjects have NCC only
        return "—" if value is None else f"{100 * float(value.mean()):.1f}"

    print(f"{'registration':40s} {'Dice %':>7s} {'NCC loss':>9s}")
    print(f"{'none (identity)':40s} {dice(scores.identity_dice):>7s} {float(scores.identity_ncc.mean()):9.3f}")
    print(f"{'optimised affine':40s} {dice(scores.affine_dice):>7s} {'':>9s}")
    print(f"{'optimised affine + displacement':40s} {dice(scores.warped_dice):>7s} {float(scores.ncc.mean()):9.3f}")
    for run in args.runs:
        pretext = json.loads((run / "pretext.json").read_text())
        last = pretext["last"]["mean"]
        name = f"head: {run.parent.name}/{run.name} @ {pretext['last'].get('iteration', 'last')}"
        warped = f"{100 * last['warped_dice']:.1f}" if "warped_dice" in last else "—"
        affine = f" (affine {100 * last['affine_dice']:.1f})" if "affine_dice" in last else ""
        print(f"{name:40s} {warped:>7s} {last['ncc']:9.3f}{affine}")


if __name__ == "__main__":
    main()
