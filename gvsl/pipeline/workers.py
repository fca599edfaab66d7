"""Running a stage's jobs in processes side by side, each at an equal share of the CPU threads."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

def in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], processes: int) -> list[Any]:
    """``[function(job) for job in jobs]`` in ``processes`` spawned processes at an equal share of the threads.

    Narrow 3-D convolutions scale poorly past one thread, so runs side by side finish sooner than
    runs one after another. The thread count fixes the order of CPU float reductions: results are
    bit-identical for one value of ``processes``.
    """
    processes = min(processes, len(jobs))
    if processes == 1:
        return [function(job) for job in jobs]
    threads = max(1, torch.get_num_threads() // processes)
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

