"""Time one GVSL pre-training step and report model FLOP utilisation (MFU).

A step is what the pre-training engine does per iteration: one backbone pass over both images,
the Z-matching and restoration heads, the three losses, backward and an Adam update. FLOPs are
counted with ``torch.utils.flop_counter`` (convolutions and matrix products, forward + backward),
and MFU divides the achieved model FLOP rate by this machine's fp32 matmul rate measured in the
same run. On the CPU the peak memory is the process's peak resident set (ru_maxrss: model,
optimizer state, activations, plus the interpreter and torch themselves).

    python benchmarks/bench_pretrain.py                  # paper width, 64³, batch 2, CPU (+ CUDA if present)
    python benchmarks/bench_pretrain.py --size 32 --channels 8,16,32,64,128,64,32,16,8 --json
    python benchmarks/bench_pretrain.py --size 32 --threads 1 --record   # a row of gvsl plan's table

``--record`` writes the measurement (seconds per step, GFLOP per step, matmul rate, the best layout) as a
row of ``gvsl/plan_timings.yaml`` for this machine's device kind (``cpu``, or the GPU's, e.g. ``h100``), and
caches the FLOP and activation counts of the widths there (:mod:`gvsl.plan`). On the CPU, measure at one
thread (``--threads 1``): the pipeline runs one single-threaded job per core.
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
from gvsl.runtime import autocast


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


def build_step(channels, size: int, batch: int, device: torch.device, channels_last: bool, precision: str = "auto"):
    torch.manual_seed(0)
    model = GVSL(channels=channels).to(device)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    criterion = GVSLLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    view_a = torch.rand(batch, 1, size, size, size, device=device).to(memory_format=fmt)
    image_b = torch.rand(batch, 1, size, size, size, device=device).to(memory_format=fmt)
    target = torch.rand(batch, 1, size, size, size, device=device)

    def step():
        with autocast(device, precision):
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
        step = build_step(channels, args.size, args.batch_size, device, channels_last, args.precision)
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
    return {
        "device": str(device),
        "matmul_gflops": peak / 1e9,
        "step_gflop": flops / 1e9,
        **best,
        **memory,
        "layouts": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="cubic crop side in voxels (default 64)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", default=",".join(map(str, PAPER_CHANNELS)), help="nine backbone widths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="both")
    parser.add_argument(
        "--augment-size", type=int, default=128, help="volume side for the augmentation timing (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on the CPU (gvsl.runtime.autocast)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--record", action="store_true", help="write the result into gvsl plan's timings table for this device kind"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {
        "size": args.size,
        "batch_size": args.batch_size,
        "channels": args.channels,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor(),
    }
    cpu = bench_device(torch.device("cpu"), args)
    report.update(
        step_seconds=cpu["step_seconds"],
        mfu=cpu["mfu"],
        step_gflop=cpu["step_gflop"],
        matmul_gflops=cpu["matmul_gflops"],
        cpu=cpu,
    )
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
                print(
                    f"{name:4s} {layout:13s} step {v['step_seconds']:.3f} s  MFU {v['mfu']:.2f}"
                    + (f"  peak {v['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in v else "")
                )
            print(
                f"{name:4s} {r['step_gflop']:.0f} GFLOP/step, matmul {r['matmul_gflops']:.0f} GFLOP/s"
                + (f", process peak RSS {r['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in r else "")
            )
    if args.json:
        print(json.dumps(report))
    if args.record:
        record(report, args)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(report: dict, args) -> None:
    """This run as a row of gvsl plan's timings table (the GPU's where one ran, else the CPU's)."""
    from gvsl.plan import TIMINGS, cache_costs, load_timings, record_row, this_device_kind

    kind, _ = this_device_kind()
    result = report.get("cuda") if kind != "cpu" else report["cpu"]
    precision = args.precision if args.precision != "auto" else ("fp32" if kind == "cpu" else "bf16")
    label = (
        torch.cuda.get_device_name(0)
        if kind != "cpu"
        else f"{_cpu_name()} core (one job per core, {report['threads']} thread(s) each)"
    )
    row = {
        "method": "gvsl",
        "channels": [int(c) for c in args.channels.split(",")],
        "size": args.size,
        "batch": args.batch_size,
        "precision": precision,
        "step_gflop": round(result["step_gflop"], 1),
        "step_seconds": round(result["step_seconds"], 4),
        "matmul_gflops": round(result["matmul_gflops"], 1),
        "threads": int(report["threads"]),
        "torch": str(report["torch"]),
        "layout": min(result["layouts"], key=lambda k: result["layouts"][k]["step_seconds"]),
    }
    if result.get("peak_memory_gib"):
        row["peak_memory_gib"] = round(result["peak_memory_gib"], 2)
    record_row(kind, row, label=label)
    if ",".join(str(c) for c in row["channels"]) not in load_timings()["costs"]:
        cache_costs(row["channels"])
    print(f"recorded in {TIMINGS} as a {kind} row")


if __name__ == "__main__":
    main()
