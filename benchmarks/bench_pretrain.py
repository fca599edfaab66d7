"""Time one GVSL pre-training step and report model FLOP utilisation (MFU).

A step is what the pre-training engine does per iteration: one backbone pass over both images,
the Z-matching and restoration heads, the three losses, backward and an Adam update. FLOPs are
counted with ``torch.utils.flop_counter`` (convolutions and matrix products, forward + backward),
and MFU divides the achieved model FLOP rate by this machine's fp32 matmul rate measured in the
same run. On the CPU the peak memory is the process's peak resident set (ru_maxrss: model,
optimizer state, activations, plus the interpreter and torch themselves).

    python benchmarks/bench_pretrain.py                  # paper width, 64³, batch 2, CPU (+ CUDA if present)
    python benchmarks/bench_pretrain.py --size 32 --channels 8,16,32,64,128,64,32,16,8 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gvsl.losses import GVSLLoss
from gvsl.nets import GVSL, PAPER_CHANNELS


def matmul_flops_per_second(device: torch.device, dtype=torch.float32, n: int = 2048, seconds: float = 2.0) -> float:
    """Best sustained rate of a square matmul (2·n³ FLOP each) over about ``seconds``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(channels, size: int, batch: int, device: torch.device, channels_last: bool):
    torch.manual_seed(0)
    model = GVSL(channels=channels).to(device)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    criterion = GVSLLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    view_a = torch.rand(batch, 1, size, size, size, device=device).to(memory_format=fmt)
    image_b = torch.rand(batch, 1, size, size, size, device=device).to(memory_format=fmt)
    target = torch.rand(batch, 1, size, size, size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            terms = criterion(model(view_a, image_b), target)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        return terms

    return step


def count_step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_step(step, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_device(device: torch.device, args) -> dict:
    channels = tuple(int(c) for c in args.channels.split(","))
    results = {}
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    peak = matmul_flops_per_second(device)
    flops = None
    for channels_last in layouts:
        step = build_step(channels, args.size, args.batch_size, device, channels_last)
        if flops is None:
            flops = count_step_flops(step)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_step(step, device, args.repeats)
        key = "channels_last" if channels_last else "contiguous"
        results[key] = {"step_seconds": seconds, "mfu": flops / seconds / peak}
        if device.type == "cuda":
            results[key]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    best = min(results.values(), key=lambda r: r["step_seconds"])
    memory = {}
    if device.type == "cpu":
        memory["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"device": str(device), "matmul_gflops": peak / 1e9, "step_gflop": flops / 1e9, **best, **memory,
            "layouts": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="cubic crop side in voxels (default 64)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", default=",".join(map(str, PAPER_CHANNELS)), help="nine backbone widths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="both")
    parser.add_argument("--augment-size", type=int, default=128, help="volume side for the augmentation timing (0: skip)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args()

    report = {"size": args.size, "batch_size": args.batch_size, "channels": args.channels,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor()}
    cpu = bench_device(torch.device("cpu"), args)
    report.update(step_seconds=cpu["step_seconds"], mfu=cpu["mfu"], step_gflop=cpu["step_gflop"],
                  matmul_gflops=cpu["matmul_gflops"], cpu=cpu)
    if torch.cuda.is_available():
        report["cuda"] = bench_device(torch.device("cuda"), args)
    if args.augment_size:
        from gvsl.views import time_augmentation

        report.update({f"augment_{k}": v for k, v in time_augmentation(size=args.augment_size).items()})
        report["augment_seconds_128"] = report.get(f"augment_spatial_seconds_{args.augment_size}")

    for name in ("cpu", "cuda"):
        if name in report:
            r = report[name]
            for layout, v in r["layouts"].items():
                print(f"{name:4s} {layout:13s} step {v['step_seconds']:.3f} s  MFU {v['mfu']:.2f}"
                      + (f"  peak {v['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in v else ""))
            print(f"{name:4s} {r['step_gflop']:.0f} GFLOP/step, matmul {r['matmul_gflops']:.0f} GFLOP/s"
                  + (f", process peak RSS {r['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in r else ""))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
