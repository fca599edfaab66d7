"""Where a run executes: device choice, the precision and memory format there, torch.distributed (torchrun)
set-up, and its progress lines. What produced a result is :mod:`gvsl.provenance`'s."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gvsl.errors import GVSLInputError

__all__ = [
    "PRECISIONS",
    "DistributedContext",
    "RunProgress",
    "autocast",
    "channels_last",
    "check_precision",
    "cpu_bf16_supported",
    "end_live",
    "eta",
    "format_duration",
    "full_precision",
    "progress_line",
    "resolve_device",
    "setup_distributed",
]

#: the ``precision`` settings of pre-training and transfer: ``auto`` is bf16 autocast on CUDA and fp32 elsewhere
PRECISIONS = ("auto", "fp32", "bf16")
#: the device types whose autocast :func:`full_precision` turns off
_AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def progress_line(message: str) -> None:
    """One line of progress for the person watching the terminal.

    Inside a papermill kernel ``sys.stdout`` reaches the executed notebook and the process's own
    standard output (``sys.__stdout__``) the terminal that runs ``dvc repro``, so the kernel writes
    to both. Worker processes write to their standard output, which ipykernel forwards to the
    notebook as well. Elsewhere the two are the same stream.
    """
    terminal = sys.__stdout__ or sys.stdout
    streams = [terminal]
    if sys.stdout is not terminal and multiprocessing.parent_process() is None:
        streams.append(sys.stdout)
    # one write per line: workers share the terminal, and print() writes the text and its newline separately,
    # so lines of two processes could run into one another
    for stream in streams:
        stream.write(f"{message}\n")
        stream.flush()


def format_duration(seconds: float) -> str:
    """``seconds`` as ``42 s``, ``12 min``, ``3 h 05 min`` or ``2 d 04 h``."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def eta(done: float, total: float, elapsed: float) -> str:
    """``ETA <duration>`` for the rest of ``total`` at the rate of the ``done`` units that took ``elapsed``
    seconds (``ETA unknown`` before the first)."""
    if done <= 0 or elapsed <= 0:
        return "ETA unknown"
    return f"ETA {format_duration(elapsed / done * max(0.0, total - done))}"


class RunProgress:
    """``k of n runs done`` lines with an ETA, for a stage whose independent runs finish one by one.

    ``progress = RunProgress("transfer gvsl", len(jobs))``, then ``progress.finished(job.name)`` as each run
    ends (in the process that collects them) prints ``transfer gvsl: 5 of 24 runs done (SHC-linear…),
    3 min elapsed, ETA 11 min``. Runs that took no time (``kept=True``: reused from an earlier run) are
    counted done but left out of the rate.
    """

    def __init__(self, label: str, total: int, clock=None):
        import time

        self.label, self.total = label, int(total)
        self._clock = clock or time.perf_counter
        self._began = self._clock()
        self.done = self.kept = 0

    def finished(self, name: str = "", kept: bool = False) -> str:
        self.done += 1
        self.kept += bool(kept)
        elapsed = self._clock() - self._began
        trained, left = self.done - self.kept, self.total - self.done
        line = (
            f"{self.label}: {self.done} of {self.total} runs done"
            + (f" ({name})" if name else "")
            + f", {format_duration(elapsed)} elapsed, "
            + (eta(trained, trained + left, elapsed) if left else "finished")
        )
        progress_line(line)
        return line


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this process's local rank) when available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise GVSLInputError(f"device: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GVSLInputError(f"device {name!r} requested but CUDA is not available")
    return device


def check_precision(precision: str, key: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`GVSLInputError` naming ``key``."""
    if precision not in PRECISIONS:
        raise GVSLInputError(f"{key}: unknown {precision!r}; valid: {list(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "auto"):
    """The training precision on ``device``: a bf16 autocast region, or none (exact fp32).

    ``auto`` is bf16 on CUDA for speed and fp32 on the CPU, where runs must be bit-reproducible;
    ``fp32`` and ``bf16`` force one or the other (CPU bf16 is native on CPUs with AVX512-BF16 or AMX,
    see :func:`cpu_bf16_supported`). Whatever the region, what must stay exact runs through
    :func:`full_precision`: the losses' sums, the geometry, softmax and the metrics.
    """
    check_precision(precision)
    device = torch.device(device)
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def full_precision(function):
    """Decorator: ``function`` runs in fp32 even when called inside an autocast region.

    Autocast overrides the caller's casts: inside a bf16 region a convolution or a matrix product of
    fp32 tensors runs in bf16 again (MONAI's ``separable_filtering`` included), so ``x.float()`` alone
    does not keep a computation in fp32. The wrapper turns autocast off for every device type where it
    is on, and passes the half-precision (fp16, bf16) tensors among the arguments, also inside lists,
    tuples and dicts, as fp32; other tensors (fp32, fp64, integers) and values pass unchanged. Outside
    autocast with fp32 arguments the call is exactly the undecorated one.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device_type in _AUTOCAST_DEVICE_TYPES:
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return function(*map(_fp32, args), **{name: _fp32(value) for name, value in kwargs.items()})

    return wrapper


def _fp32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, Mapping):
        return {key: _fp32(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # a namedtuple keeps its type
        return type(value)(_fp32(item) for item in value)
    return value


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively: the ``avx512_bf16`` or ``amx_bf16`` flag of ``/proc/cpuinfo``
    (Linux). Elsewhere, or without them, CPU bf16 autocast still runs, emulated and slower, and this says
    False. ``torch.backends.cpu.get_cpu_capability()`` only names the vector width (``AVX512`` on CPUs
    with and without bf16), so it cannot tell."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = {flag for line in handle if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def channels_last(tensors: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Each tensor on ``device``, the 5-D ones (volumes) channels-last."""
    # channels-last 3-D is faster for 3-D convolutions on CPU too (measured: 0.73 vs 0.91 s per default step).
    return {
        name: t.to(device=device, memory_format=torch.channels_last_3d) if t.ndim == 5 else t.to(device)
        for name, t in tensors.items()
    }


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` job (world size 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str = "auto") -> tuple[DistributedContext, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on CUDA, gloo on CPU).

    Multi-node jobs need nothing more: torchrun's rendezvous sets the same variables.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ctx = DistributedContext(rank, local_rank, world_size)
    device = resolve_device(device_name, local_rank)
    if ctx.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def end_live(live) -> None:
    """``live.end()`` for a DVCLive run that may end at the same moment as another run of the same repository.

    DVCLive's last act in ``end()`` removes the signal file it leaves for DVC's VS Code extension
    (``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED``, one per repository) after checking that it exists; when two
    of the pipeline's worker processes end their runs together, the second removal finds the file gone and
    raises ``FileNotFoundError`` (it failed a pipeline stage that way). Nothing of the run is lost by then.
    """
    try:
        live.end()
    except FileNotFoundError as err:
        if not str(err.filename).endswith("DVCLIVE_STEP_COMPLETED"):
            raise
