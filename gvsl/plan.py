"""``gvsl plan``: what a pipeline run will cost before it starts.

For a ``params.yaml`` (or ``--params FILE``) and a number of devices of one kind, it prints per stage
(prepare, pretrain, transfer, report) the number of jobs, the device-hours, the memory per job and the
wall time with the jobs spread one per device. Nothing is prepared or trained; the counts follow the
pipeline's own rules (:func:`gvsl.pipeline.stage_transfer.transfer_jobs`, :mod:`gvsl.pipeline.layout`).

How the numbers are made (approximations, all printed with the plan):

- **Step FLOP** of each method at the given widths are counted with ``torch.utils.flop_counter`` on the
  method's real network, loss and backward at 16³ (batch 1) and scaled by the crop's voxels after the
  U-Net's padding to a multiple of 16 (every convolution's FLOP are linear in them). The counts per
  widths are cached in :data:`TIMINGS` (``costs``); widths not there are counted now (seconds).
- **Step time** = the nearest measured configuration's seconds per step of the device kind (a row of
  :data:`TIMINGS`, written by ``benchmarks/bench_pretrain.py --record`` and ``benchmarks/gpu_check.py
  --record``) × the job's step FLOP / that configuration's step FLOP: the rate (FLOP/s) of the measured
  whole-GVSL step is assumed for every method, forward-only passes and transfer steps. Rows marked
  ``estimate`` are not measurements (the H100 row: FLOP at an assumed MFU until ``make gpu-check``
  records one). The data pipeline (CPU augmentation, reading volumes) and Python overhead are not counted.
- **Transfer runs** take their cap (``iterations``): with ``stop_on_plateau`` they may stop earlier.
  Validation every ``val_every`` iterations and one test pass are counted as forward passes over the
  split's cases (sliding windows of the training crop, 25 % overlap; classification: one centre crop).
  A linear probe on whole volumes caches its frozen features: one forward pass per case in all.
  Prepared shapes come from ``prepare.tasks`` (the source's ROI in mm at its spacing, or ``shape``);
  split sizes from :data:`gvsl.data.sources.PAPER_SPLITS` (real sources) or ``PHANTOM_COUNTS``.
- **Memory per job** = weights, gradients and Adam's two moments (16 B per trained parameter, 4 B per
  frozen one; bf16 adds a 2 B copy) + the activations autograd saves for backward (counted with
  ``saved_tensors_hooks`` on the real step at 16³, per sample, scaled by voxels). Allocator workspace
  and transient peaks are not in it: read it as a floor. A measured peak (CUDA
  ``max_memory_allocated``) of the same configuration replaces it where the table holds one.
- **Wall time**: each stage's jobs are placed longest first on the least loaded device; the stages
  follow one another (DVC runs one stage at a time). Prepare and report run on the CPU and are not
  estimated here.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gvsl.errors import GVSLInputError
from gvsl.methods import SCRATCH

__all__ = [
    "COST_SIZE",
    "STAGES",
    "TIMINGS",
    "JobEstimate",
    "Plan",
    "StageEstimate",
    "count_costs",
    "format_plan",
    "load_timings",
    "make_plan",
    "padded_voxels",
    "record_row",
    "this_device_kind",
]

#: the table of measured (and estimated) step times per device kind, and the cached FLOP/memory counts
TIMINGS = Path(__file__).with_name("plan_timings.yaml")
STAGES = ("prepare", "pretrain", "transfer", "report")
#: cubic side at which :func:`count_costs` runs the real step
COST_SIZE = 16
_GIB = 2**30
#: sliding-window overlap of evaluation (gvsl.transfer.TransferConfig.sw_overlap's default)
_SW_OVERLAP = 0.25


def padded_voxels(shape: Sequence[int]) -> int:
    """Voxels of ``shape`` after the U-Net pads every side to a multiple of 16."""
    return math.prod(-(-int(s) // 16) * 16 for s in shape)


# ---------------------------------------------------------------- the timings table


def load_timings(path: str | Path = TIMINGS) -> dict[str, Any]:
    """The timings table: ``devices`` (kind -> rows) and ``costs`` (widths -> counts)."""
    try:
        table = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise GVSLInputError(f"{path}: cannot read the timings table: {err}") from None
    if not isinstance(table.get("devices"), Mapping):
        raise GVSLInputError(f"{path}: the timings table needs a 'devices' mapping")
    table.setdefault("costs", {})
    return table


def _write_timings(table: Mapping[str, Any], path: Path) -> None:
    header = (
        "# gvsl plan's step times per device kind (rows) and FLOP / memory counts per widths (costs).\n"
        "# Written by benchmarks/bench_pretrain.py --record and benchmarks/gpu_check.py --record;\n"
        "# rows with source: estimate are not measurements. See gvsl/plan.py.\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(dict(table), sort_keys=False, width=110, default_flow_style=None))
    tmp.replace(path)


def record_row(kind: str, row: Mapping[str, Any], path: str | Path = TIMINGS, label: str | None = None) -> None:
    """Write a measured row for ``kind``: it replaces the row of the same configuration (widths, size, batch,
    precision) and every estimate of that kind, and caches the FLOP counts of its widths."""
    path = Path(path)
    table = load_timings(path)
    entry = table["devices"].setdefault(kind, {"label": label or kind, "rows": []})
    if label:
        entry["label"] = label
    same = ("channels", "size", "batch", "precision")
    entry["rows"] = [
        r for r in entry["rows"] if r.get("source") != "estimate" and any(r.get(k) != row.get(k) for k in same)
    ]
    entry["rows"].append({"source": "measured", "date": datetime.date.today().isoformat(), **dict(row)})
    _write_timings(table, path)


def cache_costs(channels: Sequence[int], path: str | Path = TIMINGS) -> None:
    """Count the FLOP and memory of every method and transfer step at ``channels`` into the table."""
    path = Path(path)
    table = load_timings(path)
    table["costs"][_channels_key(channels)] = count_costs(channels)
    _write_timings(table, path)


def _channels_key(channels: Sequence[int]) -> str:
    return ",".join(str(int(c)) for c in channels)


# ---------------------------------------------------------------- counting FLOP and saved activations


def count_costs(channels: Sequence[int]) -> dict[str, Any]:
    """Per method: step FLOP per padded voxel (batch 1), activation bytes autograd saves per padded voxel
    and sample (fp32 and bf16), trained and total parameters; and the transfer steps' counts. Counted on
    the real networks and losses at :data:`COST_SIZE`³ on the CPU."""
    import torch

    from gvsl.methods import PRETRAIN_METHODS

    channels = tuple(int(c) for c in channels)
    with torch.random.fork_rng(devices=[]):
        methods = {key: _count_method(key, channels) for key in PRETRAIN_METHODS}
        transfer = _count_transfer(channels)
    return {"methods": methods, "transfer": transfer}


def _measure(step, precision: str) -> tuple[int, int]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gvsl.runtime import autocast

    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(lambda: autocast(torch.device("cpu"), precision))
    return counter.get_total_flops(), saved[0]


def _count_method(key: str, channels: tuple[int, ...]) -> dict[str, float]:
    import numpy as np
    import torch

    from gvsl.bank import VolumeBank
    from gvsl.methods import build_method
    from gvsl.runtime import DistributedContext

    size = COST_SIZE
    rng = np.random.default_rng(0)
    bank = VolumeBank([rng.random((size + 8,) * 3, dtype=np.float32) for _ in range(8)])
    counts = {}
    for batch in (1, 2):
        for precision in ("fp32", "bf16"):
            method = build_method(key)
            torch.manual_seed(0)
            model = method.build(1, channels)
            generator = torch.Generator().manual_seed(0)
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
            method.before_step(model, 0, bank, (size,) * 3, generator, optimizer, DistributedContext())
            net_inputs, targets = method.inputs(method.sample(bank, batch, (size,) * 3, generator), generator)

            # measured at once, inside the loop: the names it reads are this iteration's
            def step(region):
                with region():
                    terms = method.loss(model(**net_inputs), targets)  # noqa: B023
                terms.total.backward()

            counts[batch, precision] = _measure(step, precision)
    voxels = padded_voxels((size,) * 3)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "flop_per_voxel": counts[1, "fp32"][0] / voxels,
        # saved weights (and bf16's weight copies) are the same at batch 1 and 2: the difference is one sample's
        "act_bytes_per_voxel": {p: (counts[2, p][1] - counts[1, p][1]) / voxels for p in ("fp32", "bf16")},
        "params_trained": trained,
        "params": sum(p.numel() for p in model.parameters()),
    }


def _count_transfer(channels: tuple[int, ...]) -> dict[str, float]:
    import torch

    from gvsl.nets import UNet3D

    size = COST_SIZE
    voxels = padded_voxels((size,) * 3)
    torch.manual_seed(0)
    backbone = UNet3D(1, channels)
    params = sum(p.numel() for p in backbone.parameters())
    counts = {}
    for batch in (1, 2):
        x = torch.rand(batch, 1, size, size, size)
        for precision in ("fp32", "bf16"):

            def step(region):
                with region():
                    global_f, local_f = backbone(x)  # noqa: B023 (measured at once, inside the loop)
                (global_f.float().mean() + local_f.float().mean()).backward()

            counts[batch, precision] = _measure(step, precision)

    def forward(region):
        with torch.no_grad(), region():
            backbone(torch.rand(1, 1, size, size, size))

    forward_flop, _ = _measure(forward, "fp32")
    return {
        "train_flop_per_voxel": counts[1, "fp32"][0] / voxels,
        "forward_flop_per_voxel": forward_flop / voxels,
        "act_bytes_per_voxel": {p: (counts[2, p][1] - counts[1, p][1]) / voxels for p in ("fp32", "bf16")},
        "params": params,
        # the widest activation of a forward pass (the last decoder block's input), channels per voxel
        "widest_channels": channels[0] + channels[-2],
    }


def _costs(channels: Sequence[int], table: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    key = _channels_key(channels)
    if key not in table["costs"]:
        began = time.perf_counter()
        table["costs"][key] = count_costs(channels)
        notes.append(
            f"FLOP and activations of widths {key} counted now ({time.perf_counter() - began:.0f} s; "
            f"not cached: benchmarks/bench_pretrain.py --record caches them)"
        )
    return table["costs"][key]


# ---------------------------------------------------------------- the plan


@dataclass
class JobEstimate:
    name: str
    seconds: float
    memory_gib: float
    memory_measured: bool = False
    #: the DVC stage the job runs in, where one row of the plan covers several (transfer: one per method)
    dvc_stage: str = ""


@dataclass
class StageEstimate:
    stage: str
    jobs: list[JobEstimate] = field(default_factory=list)
    #: jobs that use no device time (scratch's initialisation, kept runs …)
    note: str = ""
    estimated: bool = True

    @property
    def device_hours(self) -> float:
        return sum(job.seconds for job in self.jobs) / 3600

    def wall_hours(self, devices: int) -> float:
        """Each DVC stage's jobs longest first onto the least loaded of ``devices``; DVC runs the stages one after
        another, so their wall times add up."""
        total = 0.0
        for dvc_stage in dict.fromkeys(job.dvc_stage for job in self.jobs):
            loads = [0.0] * max(1, devices)
            for seconds in sorted((job.seconds for job in self.jobs if job.dvc_stage == dvc_stage), reverse=True):
                loads[loads.index(min(loads))] += seconds
            total += max(loads)
        return total / 3600

    @property
    def memory_gib(self) -> float:
        return max((job.memory_gib for job in self.jobs), default=0.0)


@dataclass
class Plan:
    profile: str
    kind: str
    kind_label: str
    devices: int
    stages: list[StageEstimate]
    rows: list[str]
    notes: list[str]

    @property
    def device_hours(self) -> float:
        return sum(stage.device_hours for stage in self.stages)

    @property
    def wall_hours(self) -> float:
        return sum(stage.wall_hours(self.devices) for stage in self.stages)


def this_device_kind() -> tuple[str, int]:
    """This machine's device kind and count: its CUDA GPUs (kind from the name, e.g. ``h100``) or its CPU
    cores (kind ``cpu``: one single-threaded job per core, as the stages run them)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for kind in ("h200", "h100", "a100", "l40s", "a10"):
            if kind in name:
                return kind, torch.cuda.device_count()
        return name.replace("nvidia ", "").replace(" ", "-"), torch.cuda.device_count()
    from gvsl.pipeline.workers import available_cores

    return "cpu", available_cores()


class _Rates:
    """Seconds per FLOP of one device kind, from the row nearest in step FLOP (same precision if any)."""

    def __init__(self, kind: str, table: Mapping[str, Any], precision: str):
        entry = table["devices"].get(kind)
        if not entry or not entry.get("rows"):
            raise GVSLInputError(
                f"no step times for device kind {kind!r} in the timings table; known kinds: "
                f"{sorted(table['devices'])} (benchmarks/bench_pretrain.py --record adds this machine's)"
            )
        self.label = entry.get("label", kind)
        rows = entry["rows"]
        self.rows = [r for r in rows if r.get("precision") == precision] or rows
        self.precision = precision

    def row(self, flop: float) -> Mapping[str, Any]:
        return min(self.rows, key=lambda r: abs(math.log(flop / (r["step_gflop"] * 1e9))))

    def seconds(self, flop: float, used: set[int]) -> float:
        row = self.row(flop)
        used.add(id(row))
        return row["step_seconds"] * flop / (row["step_gflop"] * 1e9)

    def measured_peak(self, channels: Sequence[int], size: Sequence[int], batch: int) -> float | None:
        for row in self.rows:
            if (
                row.get("source") == "measured"
                and row.get("peak_memory_gib")
                and row.get("method", "gvsl") == "gvsl"
                and _channels_key(row["channels"]) == _channels_key(channels)
                and list(size) == [row["size"]] * 3
                and row["batch"] == batch
                and row["precision"] == self.precision
            ):
                return float(row["peak_memory_gib"])
        return None


def _precision(value: Any, kind: str) -> str:
    if value in (None, "auto"):
        return "fp32" if kind == "cpu" else "bf16"
    return str(value)


def make_plan(settings: Any, devices: int, kind: str, table: Mapping[str, Any] | None = None) -> Plan:
    """The estimate of every stage for ``settings`` (the pipeline's :class:`~gvsl.pipeline.config.Settings`, or a
    ``params.yaml`` mapping over the defaults) on ``devices`` devices of ``kind`` (see the module docstring)."""
    from gvsl.pipeline.config import as_settings
    from gvsl.table1 import PROTOCOLS

    settings = as_settings(settings)
    if not isinstance(devices, int) or devices < 1:
        raise GVSLInputError(f"--devices must be an integer >= 1, got {devices!r}")
    table = load_timings() if table is None else table
    notes: list[str] = []
    methods, tasks = list(settings.pipeline.methods), list(settings.pipeline.tasks)
    channels = list(settings.model.channels)
    seeds = settings.pretrain.seeds
    costs = _costs(channels, table, notes)
    used: set[int] = set()

    pre = settings.pretrain
    pre_precision = _precision(pre.precision, kind)
    rates = _Rates(kind, table, pre_precision)
    crop, batch, iterations, eval_every = list(pre.crop), pre.batch_size, pre.iterations, pre.eval_every
    pairs = pre.heldout.pairs if pre.heldout is not None else 0
    voxels = padded_voxels(crop)
    pretrain = StageEstimate("pretrain")
    trained = [m for m in methods if m != SCRATCH]
    for method in trained:
        cost = costs["methods"][method]
        step = cost["flop_per_voxel"] * voxels * batch
        # held-out evaluation: a forward pass (a third of forward + backward) of each pair, every eval_every
        evaluation = cost["flop_per_voxel"] * voxels * pairs / 3 * (iterations // eval_every + 1)
        seconds = rates.seconds(step, used) * iterations + rates.seconds(max(evaluation, 1.0), used)
        measured = rates.measured_peak(channels, crop, batch) if method == "gvsl" else None
        memory = measured or _train_memory(
            cost["params_trained"], cost["params"], cost["act_bytes_per_voxel"], voxels * batch, pre_precision
        )
        for seed in seeds:
            pretrain.jobs.append(JobEstimate(f"{method} seed {seed}", seconds, memory, measured is not None))
    if SCRATCH in methods:
        pretrain.note = f"+ {len(seeds)} scratch initialisation(s), no training"

    transfer = StageEstimate("transfer")
    shapes = {task: _prepared_shape(settings.prepare.request(task), task) for task in tasks}
    splits = {task: _split_counts(settings.prepare.request(task), task) for task in tasks}
    for task in tasks:
        for protocol in PROTOCOLS:
            runs = settings.transfer.protocol(protocol)
            run = _transfer_run(task, protocol, runs, shapes[task], splits[task], costs["transfer"], kind, table, used)
            # a run on a fraction of the labels is costed as one on all of them: its steps are the same
            for method, fraction, pretrain_seed, seed in itertools.product(methods, runs.fractions, seeds, runs.seeds):
                labels = "" if fraction == 1 else f" labels {fraction:g}"
                transfer.jobs.append(
                    JobEstimate(
                        f"{task}-{protocol}-{method}{labels} p{pretrain_seed} t{seed}",
                        run[0],
                        run[1],
                        dvc_stage=f"transfer@{method}",
                    )
                )
    prepare = StageEstimate(
        "prepare",
        [JobEstimate(task, 0.0, 0.0) for task in settings.prepare.tasks],
        note="CPU: reading, resampling, cropping; not estimated",
        estimated=False,
    )
    report = StageEstimate(
        "report", [JobEstimate("report", 0.0, 0.0)], note="CPU: tables, t-SNE, figures; not estimated", estimated=False
    )
    rows = [_describe_row(r, kind) for entry in [table["devices"][kind]] for r in entry["rows"] if id(r) in used]
    return Plan(
        settings.profile,
        kind,
        rates.label,
        devices,
        [prepare, pretrain, transfer, report],
        rows,
        notes,
    )


def _train_memory(
    trained: int, params: int, act_bytes: Mapping[str, float], samples_voxels: float, precision: str
) -> float:
    """Weights, gradients and Adam moments of trained parameters (16 B), frozen ones (4 B), bf16's weight
    copies (2 B), and the saved activations."""
    weights = 16 * trained + 4 * (params - trained) + (2 * params if precision == "bf16" else 0)
    return (weights + act_bytes[precision] * samples_voxels) / _GIB


def _windows(shape: Sequence[int], window: Sequence[int]) -> int:
    """Sliding windows MONAI places over ``shape`` (overlap :data:`_SW_OVERLAP`)."""
    count = 1
    for s, w in zip(shape, window):
        stride = max(1, int(w * (1 - _SW_OVERLAP)))
        count *= 1 if s <= w else math.ceil((s - w) / stride) + 1
    return count


def _transfer_run(
    task: str,
    protocol: str,
    runs: Any,
    shape: tuple[int, ...],
    splits: tuple[int, int, int],
    cost: Mapping[str, Any],
    kind: str,
    table: Mapping[str, Any],
    used: set[int],
) -> tuple[float, float]:
    """(seconds, GiB) of one transfer run of ``task``/``protocol``."""
    from gvsl.data import TASK_TYPES

    try:
        crop, iterations = runs.task_crop(task) or shape, runs.cap(task)
    except GVSLInputError as err:
        raise GVSLInputError(f"transfer.{protocol}: {err}") from None
    val_every, batch = runs.val_every, runs.batch_size
    precision = _precision(runs.precision, kind)
    rates = _Rates(kind, table, precision)
    train, val, test = splits
    segmentation = TASK_TYPES[task] == "segmentation"
    voxels = padded_voxels(crop)
    windows = (_windows(shape, crop) if segmentation else 1) * voxels
    forward = cost["forward_flop_per_voxel"]
    cached = protocol == "linear" and tuple(crop) == tuple(shape)
    evaluations = iterations // val_every + 1
    if protocol == "finetune":
        flop_train = cost["train_flop_per_voxel"] * voxels * batch * iterations
    elif cached:  # the frozen features of every case once; the head's steps are left out (tiny)
        flop_train = forward * voxels * train
        evaluations = 1
    else:
        flop_train = forward * voxels * batch * iterations
    flop_eval = forward * windows * (val * evaluations + test)
    seconds = rates.seconds(max(flop_train / iterations, 1.0), used) * iterations + rates.seconds(
        max(flop_eval, 1.0), used
    )
    bytes_per = 2 if precision == "bf16" else 4
    # evaluation: EVAL_BATCH windows' widest activation, three of them alive at once
    evaluation = 3 * cost["widest_channels"] * voxels * 4 * bytes_per
    if protocol == "finetune":
        memory = (
            16 * cost["params"]
            + (2 * cost["params"] if precision == "bf16" else 0)
            + max(cost["act_bytes_per_voxel"][precision] * voxels * batch, evaluation)
        )
    else:
        memory = 4 * cost["params"] + evaluation
    return seconds, memory / _GIB


def _prepared_shape(request: Any, task: str) -> tuple[int, int, int]:
    """The prepared volume shape of ``task`` from ``prepare.tasks.<task>``: its ROI (``roi_mm`` or the source's
    default box) at its spacing (or the source's default), as :mod:`gvsl.data.sources` builds it. Real
    datasets' cases vary; this is the box the kit crops them to."""
    from gvsl.data.preprocess import roi_shape
    from gvsl.data.sources.conventions import PAPER_SPACING, ROI_MM

    source = request.source
    kinds = {
        "phantom-ct": ({"CCC": "phantom-lung", "SAC": "phantom-coronary"}.get(task, "phantom-heart"), (5.0,) * 3),
        "mni-brain": ("phantom-brain", (4.0,) * 3),
        "mmwhs": ("heart", PAPER_SPACING),
        "asoca": ("heart", PAPER_SPACING),
        "stoic": ("lung", PAPER_SPACING),
        "candi": ("brain", PAPER_SPACING),
    }
    if source not in kinds:
        raise GVSLInputError(
            f"params.yaml: prepare.tasks.{task}.source {source!r}: gvsl plan knows no prepared "
            f"shape for it; known: {sorted(kinds)}"
        )
    roi_kind, spacing = kinds[source]
    return roi_shape(request.roi_mm or ROI_MM[roi_kind], request.target_spacing(spacing))


def _split_counts(request: Any, task: str) -> tuple[int, int, int]:
    from gvsl.data.sources import PAPER_SPLITS, PHANTOM_COUNTS, scale_counts

    counts = PHANTOM_COUNTS[task] if request.source in ("phantom-ct", "mni-brain") else PAPER_SPLITS[task]
    if request.subjects:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts = scale_counts(counts, request.subjects, what=task)
    return tuple(int(c) for c in counts)


def _describe_row(row: Mapping[str, Any], kind: str) -> str:
    what = (
        f"{kind}: {row['source']}"
        + (f" {row['date']}" if row.get("date") else "")
        + f", whole GVSL widths {_channels_key(row['channels'])}, {row['size']}³, batch {row['batch']}, "
        f"{row['precision']}: {row['step_seconds']:.3g} s/step, {row['step_gflop']:.0f} GFLOP/step"
    )
    if row.get("threads"):
        what += f", {row['threads']} thread(s)"
    if row.get("note"):
        what += f" ({row['note']})"
    return what


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:.0f} h ({hours / 24:.1f} d)"


def format_plan(plan: Plan) -> str:
    lines = [
        f"gvsl plan: profile {plan.profile} on {plan.devices} × {plan.kind_label} ({plan.kind}), jobs spread one "
        f"per device, longest first",
        "",
        f"{'stage':<9} {'jobs':>5} {'device-hours':>13} {'memory/job':>11} {'wall time':>16}  note",
    ]
    for stage in plan.stages:
        if stage.estimated:
            memory = f"{stage.memory_gib:.1f} GiB" + ("" if any(j.memory_measured for j in stage.jobs) else "*")
            lines.append(
                f"{stage.stage:<9} {len(stage.jobs):>5} {stage.device_hours:>13.1f} {memory:>11} "
                f"{_hours(stage.wall_hours(plan.devices)):>16}  {stage.note}"
            )
        else:
            lines.append(f"{stage.stage:<9} {len(stage.jobs):>5} {'-':>13} {'-':>11} {'-':>16}  {stage.note}")
    lines += [
        f"{'total':<9} {sum(len(s.jobs) for s in plan.stages):>5} {plan.device_hours:>13.1f} {'':>11} "
        f"{_hours(plan.wall_hours):>16}  (pretrain + transfer)",
        "",
        "Step times: the nearest measured configuration's seconds per step, scaled by FLOP (voxels × width²,",
        "counted on each method's real step); the data pipeline and Python overhead are not counted.",
        "Transfer runs at their iteration cap; validation and test passes included. * memory: estimated",
        "(weights, gradients, Adam state, saved activations; a floor). From the timings table:",
    ]
    lines += [f"  {row}" for row in plan.rows]
    if any("estimate" in row for row in plan.rows):
        lines.append("  ESTIMATE, not a measurement: run `make gpu-check` on that device to record one.")
    lines += [f"Note: {note}" for note in plan.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="the pipeline's settings over the paper's defaults (default params.yaml; e.g. profiles/paper.yaml)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="devices that run jobs side by side (default: this machine's GPUs, else its CPU cores)",
    )
    parser.add_argument(
        "--device-kind", default=None, help="a kind of the timings table, e.g. cpu or h100 (default: this machine's)"
    )
    parser.add_argument("--timings", default=str(TIMINGS), help="the timings table (default: the package's)")


def run(args: argparse.Namespace) -> int:
    from gvsl.pipeline.config import load_settings

    settings = load_settings(args.params)
    kind, count = this_device_kind()
    if args.device_kind:
        kind = args.device_kind.lower()
        count = args.devices or 1
    devices = args.devices or count
    try:
        plan = make_plan(settings, devices, kind, load_timings(args.timings))
    except GVSLInputError as err:
        raise GVSLInputError(f"{args.params}: {err}") from None
    print(format_plan(plan))
    return 0
