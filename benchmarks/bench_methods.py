"""Seconds per pre-training step of every method, timed through the engine itself (:func:`gvsl.pretrain.pretrain`:
sampling, augmentation, forward, loss, backward, Adam, logging), on one thread as the default pipeline's
side-by-side processes run.

Every method trains on the same volumes with the same crop, batch and widths. The report gives the
seconds per step of a short run (its first step, DeepCluster's first clustering and the final
checkpoint included) and what ``--iterations`` steps would cost at that rate.

    python benchmarks/bench_methods.py                                   # default profile's settings
    python benchmarks/bench_methods.py --data build/prepared/pretrain --json
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from gvsl.bank import VolumeBank
from gvsl.methods import PRETRAIN_METHODS
from gvsl.pretrain import PretrainConfig, pretrain


def bank_from(data: str | None, seed: int = 0) -> VolumeBank:
    if data:
        from gvsl.data import load_prepared

        return VolumeBank([c.image for c in load_prepared(data).load_split("train")])
    rng = np.random.default_rng(seed)
    return VolumeBank([rng.random((64, 64, 64), dtype=np.float32) for _ in range(8)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared pre-training dataset (default: random 64³ volumes)")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", default="8,16,32,64,128,64,32,16,8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12, help="steps timed per method")
    parser.add_argument("--iterations", type=int, default=400, help="iterations to cost (default profile: 400)")
    parser.add_argument("--methods", nargs="*", default=list(PRETRAIN_METHODS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bank = bank_from(args.data)
    rows = {}
    for key in args.methods:
        config = PretrainConfig(
            method=key,
            iterations=args.steps,
            batch_size=args.batch_size,
            crop=(args.crop,) * 3,
            channels=tuple(int(c) for c in args.channels.split(",")),
            lr=1e-3,
            checkpoint_every=args.steps,
            device="cpu",
        )
        with tempfile.TemporaryDirectory() as out:
            result = pretrain(bank, out, config, progress=False)
        seconds = 1 / result.steps_per_second
        rows[key] = {"step_seconds": round(seconds, 4), "run_seconds": round(seconds * args.iterations, 1)}
        print(f"{key:15s} {seconds:.3f} s/step  {seconds * args.iterations:6.0f} s for {args.iterations} iterations")
    if args.json:
        print(
            json.dumps(
                {
                    "threads": args.threads,
                    "crop": args.crop,
                    "batch_size": args.batch_size,
                    "channels": args.channels,
                    "methods": rows,
                }
            )
        )


if __name__ == "__main__":
    main()
