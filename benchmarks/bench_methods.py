"""Seconds per pre-training step of every method, as the engine runs it (sampling, augmentation, forward,
backward, Adam), on one thread as the default pipeline's side-by-side processes do.

Each method draws from the same bank of volumes with the same crop, batch and widths; the report
gives the median step time after a warm-up and what ``--iterations`` steps would cost.

    python benchmarks/bench_methods.py                                   # default profile's settings
    python benchmarks/bench_methods.py --data build/prepared/pretrain --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from gvsl.bank import VolumeBank
from gvsl.methods import PRETRAIN_METHODS, build_method
from gvsl.runtime import setup_distributed


def bank_from(data: str | None, seed: int = 0) -> VolumeBank:
    if data:
        from gvsl.data import load_prepared

        return VolumeBank([c.image for c in load_prepared(data).load_split("train")])
    rng = np.random.default_rng(seed)
    return VolumeBank([rng.random((64, 64, 64), dtype=np.float32) for _ in range(8)])


def time_method(key: str, bank: VolumeBank, crop, batch: int, channels, repeats: int) -> float:
    method = build_method(key)
    torch.manual_seed(0)
    model = method.build(bank.channels, channels).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    context = setup_distributed("cpu")[0]
    times = []
    for iteration in range(repeats + 2):
        start = time.perf_counter()
        method.before_step(model, iteration, bank, crop, generator, optimizer, context)
        net_inputs, targets = method.inputs(method.sample(bank, batch, crop, generator), generator)
        terms = method.loss(model(**{k: v.to(memory_format=torch.channels_last_3d) for k, v in net_inputs.items()}),
                            targets)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        method.after_step(model, iteration, repeats + 2)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared pre-training dataset (default: random 64³ volumes)")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", default="8,16,32,64,128,64,32,16,8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=400, help="iterations to cost (default profile: 400)")
    parser.add_argument("--methods", nargs="*", default=list(PRETRAIN_METHODS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bank = bank_from(args.data)
    channels = tuple(int(c) for c in args.channels.split(","))
    crop = (args.crop,) * 3
    rows = {}
    for key in args.methods:
        seconds = time_method(key, bank, crop, args.batch_size, channels, args.repeats)
        rows[key] = {"step_seconds": round(seconds, 4), "run_seconds": round(seconds * args.iterations, 1)}
        print(f"{key:15s} {seconds:.3f} s/step  {seconds * args.iterations:6.0f} s for {args.iterations} iterations")
    if args.json:
        print(json.dumps({"threads": args.threads, "crop": args.crop, "batch_size": args.batch_size,
                          "channels": args.channels, "methods": rows}))


if __name__ == "__main__":
    main()
