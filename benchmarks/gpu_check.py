"""``make gpu-check``: the paper profile's CUDA path on one GPU, in one table, in a few minutes.

Rows (each on the kit's own code: the ``gvsl`` method's network and loss, the transfer model and loss,
the pre-training engine, ``gvsl.runtime.autocast``):

- a pre-training step of whole GVSL at paper width (32..512), 128³, batch 2: fp32 and bf16, with and
  without channels-last 3-D tensors, and bf16 with ``torch.compile`` of the network: seconds per step
  (median), peak memory (``torch.cuda.max_memory_allocated``) and MFU against a bf16 matmul measured in
  the same run (step FLOP counted by ``torch.utils.flop_counter``);
- a fine-tuning transfer step at 96³ (batch 1, 8 classes, bf16);
- a DDP step through NCCL with world size 1 (process group on a TCP store on localhost);
- 20 bf16 pre-training iterations of the engine (``gvsl.pretrain.pretrain``: real crops, augmentation,
  autocast, the non-finite-loss guard, a checkpoint), all losses and weights finite.

Without CUDA it prints one line saying it skipped and exits 0. ``--device cpu --size 16 --quick`` runs every
row but the compiled one on the CPU at a tiny size (the test suite does, so the table logic is tested
without a GPU; the DDP row then uses gloo). ``--record`` writes the bf16 and fp32 rows into ``gvsl plan``'s
timings table (``gvsl/plan_timings.yaml``) for this GPU's kind.

    python benchmarks/gpu_check.py                       # on a CUDA machine (make gpu-check)
    python benchmarks/gpu_check.py --device cpu --size 16 --quick
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from gvsl.nets import PAPER_CHANNELS as PAPER_WIDTHS

# the timing helpers are the CPU benchmark's (this folder); the script is run as a file, not a package
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretrain import count_step_flops, matmul_flops_per_second, time_step


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def gvsl_inputs(size: int, batch: int, seed: int = 0):
    """One step's network inputs and loss targets for whole GVSL, made by its own sampling and augmentation
    from smooth random volumes (on the CPU, once)."""
    import numpy as np

    from gvsl.bank import VolumeBank
    from gvsl.methods import build_method

    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(4):
        coarse = torch.from_numpy(rng.random((1, 1, 8, 8, 8), dtype=np.float32))
        volumes.append(torch.nn.functional.interpolate(coarse, size=(size + 8,) * 3, mode="trilinear")[0, 0].numpy())
    method = build_method("gvsl")
    generator = torch.Generator().manual_seed(seed)
    crops = method.sample(VolumeBank(volumes), batch, (size,) * 3, generator)
    return method, VolumeBank(volumes), method.inputs(crops, generator)


def pretrain_step(
    method,
    inputs,
    device: torch.device,
    precision: str,
    channels_last: bool,
    compile_model: bool,
    channels=PAPER_WIDTHS,
):
    """A closure doing one optimisation step of ``method``'s network on fixed inputs, and its model."""
    from gvsl.runtime import autocast

    torch.manual_seed(0)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = method.build(1, channels).to(device=device, memory_format=fmt)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    net_inputs, targets = (
        {k: v.to(device=device, memory_format=fmt) if v.ndim == 5 else v.to(device) for k, v in part.items()}
        for part in inputs
    )
    network = torch.compile(model) if compile_model else model
    losses = []

    def step():
        with autocast(device, precision):
            terms = method.loss(network(**net_inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.detach())

    return step, model, losses


def transfer_step(size: int, device: torch.device, precision: str, channels=PAPER_WIDTHS, classes: int = 8):
    """One fine-tuning step of the transfer model (segmentation, batch 1) with the transfer loss."""
    from gvsl.nets import UNet3D
    from gvsl.runtime import autocast
    from gvsl.transfer import TransferConfig
    from gvsl.transfer.model import build_transfer_model
    from gvsl.transfer.objectives import _loss_function

    config = TransferConfig.from_dict(
        {
            "task": "segmentation",
            "protocol": "finetune",
            "num_classes": classes,
            "crop": (size,) * 3,
            "class_weighting": "none",
            "precision": precision,
        }
    )
    torch.manual_seed(0)
    model = build_transfer_model(UNet3D(1, channels), config).to(device=device, memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_function = _loss_function(config, [], device)
    image = torch.rand(1, 1, size, size, size, device=device).to(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, classes, (1, size, size, size), device=device)

    def step():
        with autocast(device, precision):
            logits = model(image)
        loss = loss_function(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_step(method, inputs, device: torch.device, precision: str, channels=PAPER_WIDTHS):
    """Join a world-size-1 process group (NCCL on CUDA, gloo on the CPU) through a TCP store on localhost
    and return a DDP-wrapped GVSL step and the function that leaves the group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from gvsl.runtime import autocast

    backend = "nccl" if device.type == "cuda" else "gloo"
    store = dist.TCPStore("127.0.0.1", _free_port(), 1, is_master=True, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    torch.manual_seed(0)
    model = method.build(1, channels).to(device=device, memory_format=torch.channels_last_3d)
    wrapped = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    net_inputs, targets = (
        {
            k: v.to(device=device, memory_format=torch.channels_last_3d) if v.ndim == 5 else v.to(device)
            for k, v in part.items()
        }
        for part in inputs
    )

    def step():
        with autocast(device, precision):
            terms = method.loss(wrapped(**net_inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    return step, dist.destroy_process_group


def engine_steps(bank, size: int, steps: int, device: torch.device, channels=PAPER_WIDTHS) -> tuple[float, str, bool]:
    """``steps`` bf16 iterations of the pre-training engine; (seconds per step, what was checked)."""
    from gvsl.checkpoint import load_file
    from gvsl.pretrain import PretrainConfig, pretrain

    config = PretrainConfig.from_dict(
        {
            "method": "gvsl",
            "channels": tuple(channels),
            "crop": (size,) * 3,
            "batch_size": 2,
            "iterations": steps,
            "checkpoint_every": steps,
            "log_every": 1,
            "eval_every": steps,
            "device": str(device),
            "precision": "bf16",
            "seed": 0,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        result = pretrain(bank, out, config, progress=False)  # raises NonFiniteLossError on a non-finite loss
        state = load_file(Path(out) / "backbone.pt")["state_dict"]
    weights = all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    finite = weights and all(math.isfinite(v) for v in result.final_terms.values())
    return (
        result.seconds / steps,
        (
            f"{steps} steps, every loss finite (the engine stops on one that is not), "
            f"weights {'finite' if weights else 'NOT finite'}"
        ),
        finite,
    )


def run_checks(args) -> tuple[list[dict], dict]:
    device = torch.device(args.device)
    began = time.perf_counter()
    size, batch, widths = args.size, 2, tuple(args.channels)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": datetime.date.today().isoformat(),
        "torch": str(torch.__version__),
        "size": size,
        "widths": ",".join(map(str, widths)),
    }
    info["matmul_bf16_gflops"] = (
        matmul_flops_per_second(
            device, torch.bfloat16, 8192 if device.type == "cuda" else 256, 2.0 if not args.quick else 0.2
        )
        / 1e9
    )
    peak = info["matmul_bf16_gflops"] * 1e9
    repeats, warmup = (2, 1) if args.quick else (5, 2)
    method, bank, inputs = gvsl_inputs(size, batch)
    rows: list[dict] = []

    def add(check, precision, layout, compiled, seconds, flop, memory, note=""):
        rows.append(
            {
                "check": check,
                "precision": precision,
                "layout": layout,
                "compile": compiled,
                "step_seconds": seconds,
                "peak_memory_gib": memory,
                "mfu": flop / seconds / peak if flop and seconds and seconds == seconds else math.nan,
                "note": note,
            }
        )

    flop = None
    variants = [
        ("fp32", True, False),
        ("fp32", False, False),
        ("bf16", True, False),
        ("bf16", False, False),
        ("bf16", True, True),
    ]
    for precision, channels_last, compiled in variants:
        layout = "channels-last" if channels_last else "contiguous"
        if compiled and (args.quick or device.type != "cuda"):
            add(
                f"pretrain {size}³",
                precision,
                layout,
                "yes",
                math.nan,
                None,
                math.nan,
                "skipped: torch.compile is checked on CUDA without --quick",
            )
            continue
        if time.perf_counter() - began > args.budget:
            add(
                f"pretrain {size}³",
                precision,
                layout,
                "yes" if compiled else "no",
                math.nan,
                None,
                math.nan,
                f"skipped: past the {args.budget:.0f} s budget",
            )
            continue
        try:
            _reset_memory(device)
            step, model, losses = pretrain_step(method, inputs, device, precision, channels_last, compiled, widths)
            if flop is None:
                flop = float(count_step_flops(step))
            seconds = time_step(step, device, repeats, warmup + (1 if compiled else 0))
            finite = all(torch.isfinite(loss).item() for loss in losses)
            add(
                f"pretrain {size}³",
                precision,
                layout,
                "yes" if compiled else "no",
                seconds,
                flop,
                _peak_gib(device),
                "" if finite else "NON-FINITE loss",
            )
            del step, model, losses
        except Exception as err:
            add(
                f"pretrain {size}³",
                precision,
                layout,
                "yes" if compiled else "no",
                math.nan,
                None,
                math.nan,
                f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}",
            )
    info["step_gflop"] = (flop or math.nan) / 1e9

    transfer_size = args.transfer_size
    _reset_memory(device)
    step = transfer_step(transfer_size, device, "bf16", widths)
    transfer_flop = float(count_step_flops(step))
    add(
        f"transfer fine-tune {transfer_size}³",
        "bf16",
        "channels-last",
        "no",
        time_step(step, device, repeats, warmup),
        transfer_flop,
        _peak_gib(device),
        "batch 1, 8 classes",
    )
    del step

    _reset_memory(device)
    step, leave = ddp_step(method, inputs, device, "bf16", widths)
    try:
        seconds = time_step(step, device, repeats, warmup)
    finally:
        leave()
    add(
        f"DDP {'NCCL' if device.type == 'cuda' else 'gloo'} world 1",
        "bf16",
        "channels-last",
        "no",
        seconds,
        flop,
        _peak_gib(device),
        "TCP store on localhost",
    )
    del step

    _reset_memory(device)
    seconds, note, finite = engine_steps(bank, size, args.steps, device, widths)
    add(
        "engine bf16 steps",
        "bf16",
        "channels-last",
        "no",
        seconds,
        None,
        _peak_gib(device),
        note + "; s/step includes crops and augmentation",
    )
    info["all_finite"] = finite and not any("NON-FINITE" in row["note"] for row in rows)
    info["seconds"] = time.perf_counter() - began
    return rows, info


def format_table(rows: list[dict], info: dict) -> str:
    def num(value, fmt):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    lines = [
        f"gvsl gpu-check: {info['device']}, {info['date']}, torch {info['torch']}, bf16 matmul "
        f"{info['matmul_bf16_gflops'] / 1000:.3g} TFLOP/s, widths {info['widths']}, pre-training step "
        f"{num(info['step_gflop'], '.0f')} GFLOP at {info['size']}³ batch 2",
        "",
        "| check | precision | layout | compile | s/step | peak GiB | MFU | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['check']} | {r['precision']} | {r['layout']} | {r['compile']} | {num(r['step_seconds'], '.3f')} "
            f"| {num(r['peak_memory_gib'], '.1f')} | {num(r['mfu'], '.3f')} | {r['note']} |"
        )
    lines.append("")
    lines.append(f"all finite: {'yes' if info['all_finite'] else 'NO'}; {info['seconds']:.0f} s in all")
    return "\n".join(lines)


def record(rows: list[dict], info: dict) -> None:
    from gvsl.plan import record_row, this_device_kind

    kind, _ = this_device_kind()
    for precision in ("bf16", "fp32"):
        row = next(
            (
                r
                for r in rows
                if r["check"].startswith("pretrain")
                and r["precision"] == precision
                and r["layout"] == "channels-last"
                and r["compile"] == "no"
                and r["step_seconds"] == r["step_seconds"]
            ),
            None,
        )
        if row is None:
            continue
        record_row(
            kind,
            {
                "method": "gvsl",
                "channels": list(PAPER_WIDTHS),
                "size": info["size"],
                "batch": 2,
                "precision": precision,
                "step_gflop": round(info["step_gflop"], 1),
                "step_seconds": round(row["step_seconds"], 4),
                "matmul_gflops": round(info["matmul_bf16_gflops"], 1),
                "torch": info["torch"],
                "peak_memory_gib": round(row["peak_memory_gib"], 2),
                "layout": "channels_last",
            },
            label=info["device"],
        )
    print(f"recorded as {kind} rows of gvsl/plan_timings.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu (a test of the table)")
    parser.add_argument(
        "--channels",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=PAPER_WIDTHS,
        help="nine backbone widths (default the paper's 32..512)",
    )
    parser.add_argument("--size", type=int, default=128, help="pre-training crop side (default 128)")
    parser.add_argument("--transfer-size", type=int, default=None, help="transfer crop side (default 96, or --size)")
    parser.add_argument("--steps", type=int, default=20, help="engine iterations in bf16 (default 20)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no torch.compile")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds after which the remaining step variants are skipped (default 300)",
    )
    parser.add_argument("--record", action="store_true", help="write the measured rows into gvsl plan's table")
    args = parser.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("gpu-check: skipped: no CUDA device (torch.cuda.is_available() is False); nothing was run")
            return 0
        args.device = "cuda"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu-check: skipped: --device {args.device} but no CUDA device is available")
        return 0
    if args.transfer_size is None:
        args.transfer_size = 96 if args.size >= 96 else args.size
    if args.quick:
        args.steps = min(args.steps, 3)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "gvsl-inductor"))
    rows, info = run_checks(args)
    print(format_table(rows, info))
    if args.record and torch.device(args.device).type == "cuda" and tuple(args.channels) == PAPER_WIDTHS:
        record(rows, info)
    return 0 if info["all_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
