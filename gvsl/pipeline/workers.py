"""Running a stage's independent jobs: one worker per device, one job per device at a time.

On the CPU each job runs at one thread, whatever the number of workers: the thread count fixes the
order of CPU float reductions, so results are bit-identical however the jobs are spread. A GPU worker
sees its GPU alone (``CUDA_VISIBLE_DEVICES``), so every job runs on ``cuda:0`` of its worker and records
the same device name wherever it ran. ``executor.kind`` other than ``local`` hands the jobs to a cluster
engine instead (:mod:`gvsl.pipeline.cluster`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

__all__ = ["available_cores", "job_device", "on_devices", "run_jobs"]

#: a job function: ``function(job, device)``, ``device`` being the name the job must run on
JobFunction = Callable[[Any, str], Any]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpu(device: str) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry that makes ``device`` (``cuda:i``, an index among this process's visible
    GPUs) a worker's only GPU: entry i of this process's own ``CUDA_VISIBLE_DEVICES`` where it is set (shared nodes
    and schedulers restrict it), else i."""
    index = int(device.split(":")[1])
    inherited = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return inherited[index] if index < len(inherited) else str(index)


def job_device(device: str) -> str:
    """The name a job uses for a worker's ``device``: ``cpu``, or ``cuda:0`` (the worker's only visible GPU)."""
    return "cpu" if device == "cpu" else "cuda:0"


def run_jobs(function: JobFunction, jobs: Sequence[Any], settings: Any, group: str) -> list[Any]:
    """``[function(job, device) for job in jobs]`` on the devices of ``settings.<group>``
    (:mod:`gvsl.pipeline.devices`), by the engine of ``settings.executor`` (local processes unless it says
    otherwise); ``settings`` is the pipeline's :class:`~gvsl.pipeline.config.Settings`."""
    from gvsl.pipeline.devices import stage_devices

    devices = stage_devices(getattr(settings, group), group)
    if settings.executor["kind"] == "local":
        return on_devices(function, jobs, devices)
    from gvsl.pipeline.cluster import on_cluster

    return on_cluster(function, jobs, settings.executor, devices)


def on_devices(function: JobFunction, jobs: Sequence[Any], devices: Sequence[str]) -> list[Any]:
    """``[function(job, device) for job in jobs]``, one worker process per entry of ``devices`` (at most one per
    job), each taking the next job when its last one is done.

    A lone CPU worker is this process. CPU workers are forked: they inherit the imported modules instead of
    importing torch, MONAI and the kit again (about 10 s per stage here), and a process that never starts an
    OpenMP team is safe to fork. GPU workers are spawned (CUDA is not fork-safe) and share the CPU threads.
    """
    devices = list(devices)[: max(1, len(jobs))]
    if devices == ["cpu"]:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [function(job, "cpu") for job in jobs]
        finally:
            torch.set_num_threads(before)
    gpus = sum(device != "cpu" for device in devices)
    gpu_threads = max(1, available_cores() // max(1, gpus))
    context = multiprocessing.get_context("spawn" if gpus else "fork")
    free = context.SimpleQueue()  # each worker takes one device from it when it starts, and keeps it
    for device in devices:
        free.put(device)
    pool = ProcessPoolExecutor(
        len(devices), mp_context=context, initializer=_start_worker, initargs=(free, gpu_threads)
    )
    try:
        results = list(pool.map(_call, [function] * len(jobs), jobs))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the first failure ends the stage; queued jobs never start
        raise
    pool.shutdown()
    return results


#: the device this worker process holds (set by :func:`_start_worker`)
_DEVICE = "cpu"


def _start_worker(free: Any, gpu_threads: int) -> None:
    from gvsl.stage import die_with_parent

    global _DEVICE
    _DEVICE = free.get()
    # before anything initialises CUDA in this process: the worker sees its own GPU, or none
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if _DEVICE == "cpu" else visible_gpu(_DEVICE)
    torch.set_num_threads(1 if _DEVICE == "cpu" else gpu_threads)
    die_with_parent()  # a worker must not go on training after its stage was interrupted


def _call(function: JobFunction, job: Any) -> Any:
    return function(job, job_device(_DEVICE))
