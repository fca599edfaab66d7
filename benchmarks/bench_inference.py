"""Time a U-Net forward pass without autograd per sample, by batch size: the cost behind ``EVAL_BATCH``.

Transfer evaluation (validation every few iterations, then the test) and held-out registration run
the backbone in ``eval()`` mode. On the CPU, PyTorch sends a batch-1 3-D convolution whose
N·C·D·H is at most 20480 to its native kernel instead of oneDNN; at the default profile's widths
that is every layer, so stacking cases (``gvsl.transfer.metrics.EVAL_BATCH``) pays. Each number is
the median of ``--repeats`` passes after one warm-up, divided by the batch size; the fp32 matmul
rate is measured in the same run (``bench_pretrain.matmul_flops_per_second``).

    python benchmarks/bench_inference.py                                  # default widths, 32³, batches 1 2 4
    python benchmarks/bench_inference.py --size 64 --batches 1 4 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_pretrain import matmul_flops_per_second

from gvsl.nets import UNet3D

DEFAULT_CHANNELS = "8,16,32,64,128,64,32,16,8"


def seconds_per_sample(model: torch.nn.Module, size: int, batch: int, memory_format, repeats: int) -> float:
    x = torch.rand(batch, 1, size, size, size).to(memory_format=memory_format)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="cubic volume side in voxels (default 32)")
    parser.add_argument(
        "--channels", default=DEFAULT_CHANNELS, help="nine backbone widths (default: the default profile's)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args()
    if args.repeats < 1 or args.size < 1 or min(args.batches) < 1:
        parser.error("--size, --batches and --repeats must be >= 1")

    channels = tuple(int(c) for c in args.channels.split(","))
    model = UNet3D(1, channels).eval()
    report = {
        "size": args.size,
        "channels": args.channels,
        "threads": torch.get_num_threads(),
        "matmul_gflops": matmul_flops_per_second(torch.device("cpu")) / 1e9,
        "ms_per_sample": {},
    }
    for name, memory_format in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last_3d)):
        model = model.to(memory_format=memory_format)
        for batch in args.batches:
            ms = 1e3 * seconds_per_sample(model, args.size, batch, memory_format, args.repeats)
            report["ms_per_sample"][f"{name}_batch{batch}"] = ms
            print(f"{name:13s} batch {batch}: {ms:6.1f} ms per sample")
    print(
        f"{args.size}³, widths {args.channels}, {report['threads']} thread(s), "
        f"matmul {report['matmul_gflops']:.0f} GFLOP/s"
    )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
