"""Time GVSL's training-view augmentation (gvsl.views) per volume size.

"spatial" draws one affine + elastic transform and warps three volumes with it (x_A, t'(x_A), x_B),
batch 1; "appearance" corrupts one volume with every Models-Genesis step switched on. Each number is
the median of ``--repeats`` runs after one warm-up. The authors' spatial augmentation takes about 5 s
per 128³ sample on a 2-core CPU; the kit's target is at most 0.5 s.

    python benchmarks/bench_views.py                     # 64³ and 128³ on CPU (and CUDA if present)
    python benchmarks/bench_views.py --sizes 128 --json  # last line: {"spatial_seconds_128": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from gvsl.views import time_augmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="volume sides in voxels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per number (median reported)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args()
    if args.repeats < 1 or min(args.sizes) < 1:
        parser.error(f"--repeats and --sizes must be >= 1, got {args.repeats} and {args.sizes}")

    report: dict[str, object] = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for size in args.sizes:
            timings = time_augmentation(size=size, repeats=args.repeats, device=device)
            print(
                f"{device:>4} {size:>4}³: spatial (3 volumes) {timings[f'spatial_seconds_{size}']:.3f} s, "
                f"appearance (1 volume) {timings[f'appearance_seconds_{size}']:.3f} s"
            )
            # CPU numbers carry the plain names the pre-training benchmark and README quote.
            prefix = "" if device == "cpu" else f"{device}_"
            report.update({prefix + name: seconds for name, seconds in timings.items()})
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
