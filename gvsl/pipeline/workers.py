"""Running a stage's jobs in processes side by side: on the CPU each job at one thread, whatever their number."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

__all__ = ["available_cores", "in_processes"]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], processes: int,
                 single_threaded: bool = True) -> list[Any]:
    """``[function(job) for job in jobs]`` in up to ``processes`` processes side by side.

    With ``single_threaded`` (jobs that compute on the CPU) every job runs at one thread, in a worker
    or in this process: the thread count fixes the order of CPU float reductions, so one thread per
    job makes its results bit-identical whatever ``processes`` is, and narrow 3-D convolutions scale
    poorly past one thread anyway. Otherwise (jobs on a GPU) the workers share the CPU threads, which
    feed the device.
    """
    processes = min(processes, len(jobs))
    threads = 1 if single_threaded else max(1, torch.get_num_threads() // processes)
    if processes == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return [function(job) for job in jobs]
        finally:
            torch.set_num_threads(before)
    # Single-threaded workers are forked: they inherit the imported modules instead of importing torch,
    # MONAI and the kit again (about 10 s per stage here), and a process that never starts an OpenMP
    # team is safe to fork. Multi-threaded workers are spawned, as OpenMP is not fork-safe.
    context = multiprocessing.get_context("fork" if threads == 1 else "spawn")
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker, initargs=(threads,))
    try:
        results = list(pool.map(function, jobs))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the first failure ends the stage; queued jobs never start
        raise
    pool.shutdown()
    return results


def _start_worker(threads: int) -> None:
    from gvsl.stage import die_with_parent

    torch.set_num_threads(threads)
    die_with_parent()  # a worker must not go on training after its stage was interrupted
