"""A stage's jobs on a cluster engine: ``params.executor``, through submitit (an optional extra).

* ``{kind: local}`` (default): the kit's own worker processes on this machine (:mod:`gvsl.pipeline.workers`);
  submitit is never imported.
* ``{kind: slurm, partition: …}``: one SLURM job per run (``sbatch`` through submitit), each on
  ``gpus_per_job`` GPUs of one node (0: on the CPU, at one thread); SLURM places them.
* ``{kind: submitit-local}``: the same code path on this machine (submitit's ``LocalExecutor``, one process
  per job), each job on a free device of ``<group>.devices``: what the tests run.

A job runs ``function(job, device)`` in the stage's working directory, as a local worker would, so its
files and results are the same. A job that reaches SLURM's time limit is requeued (submitit's
checkpointing); pre-training then resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gvsl.errors import GVSLInputError

__all__ = ["EXECUTOR_KINDS", "executor_settings", "on_cluster"]

#: each kind's settings and their defaults (``max_parallel: auto``: every job at once on SLURM, one per
#: device of the stage on submitit-local)
EXECUTOR_KINDS: dict[str, dict[str, Any]] = {
    "local": {},
    "submitit-local": {"timeout_min": 10080, "max_parallel": "auto", "folder": "build/submitit"},
    "slurm": {
        "partition": None,
        "gpus_per_job": 1,
        "cpus_per_job": 8,
        "mem_gb": None,
        "timeout_min": 2880,
        "max_parallel": "auto",
        "folder": "build/submitit",
        "setup": [],
        "additional": {},
    },
}


def executor_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``executor`` settings ``given``, with their kind's defaults filled in."""
    kind = given.get("kind") if isinstance(given, Mapping) else None
    if kind not in EXECUTOR_KINDS:
        raise GVSLInputError(f"executor.kind must be one of {list(EXECUTOR_KINDS)}; got {kind!r}")
    unknown = sorted(set(given) - {"kind", *EXECUTOR_KINDS[kind]})
    if unknown:
        raise GVSLInputError(f"executor ({kind}): unknown settings {unknown}; valid: {sorted(EXECUTOR_KINDS[kind])}")
    settings = {**EXECUTOR_KINDS[kind], **given}
    if kind == "slurm" and not isinstance(settings["partition"], str):
        raise GVSLInputError(f"executor.partition: the SLURM partition is required; got {settings['partition']!r}")
    for key, least in (("gpus_per_job", 0), ("cpus_per_job", 1), ("timeout_min", 1)):
        value = settings.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise GVSLInputError(f"executor.{key} must be an integer >= {least}; got {value!r}")
    if not isinstance(settings.get("setup", []), list) or not isinstance(settings.get("additional", {}), Mapping):
        raise GVSLInputError(
            "executor.setup must be a list of shell lines and executor.additional a "
            f"mapping of sbatch options; got {settings.get('setup')!r}, {settings.get('additional')!r}"
        )
    parallel = settings.get("max_parallel", "auto")
    if parallel != "auto" and not (isinstance(parallel, int) and parallel >= 1):
        raise GVSLInputError(f"executor.max_parallel must be 'auto' or an integer >= 1; got {parallel!r}")
    return settings


def on_cluster(function: Any, jobs: Sequence[Any], settings: Mapping[str, Any], devices: Sequence[str]) -> list[Any]:
    """``[function(job, device) for job in jobs]`` as engine jobs, at most ``max_parallel`` at a time; the
    first failure cancels the jobs still running and ends the stage."""
    try:
        import submitit
    except ImportError:
        raise GVSLInputError(
            f"executor.kind {settings['kind']} needs submitit: pip install -r requirements-submitit.lock"
        ) from None
    from gvsl.runtime import progress_line

    local = settings["kind"] == "submitit-local"
    executor = (submitit.LocalExecutor if local else submitit.SlurmExecutor)(folder=f"{settings['folder']}/%j")
    # a slot is where one job runs: a device of this machine (submitit-local) or a place in SLURM's queue
    slots = list(devices) if local else [None] * len(jobs)
    if settings["max_parallel"] != "auto":
        slots = slots[: settings["max_parallel"]]
    free, running, results = list(reversed(slots)), {}, [None] * len(jobs)
    pending = list(reversed(list(enumerate(jobs))))
    progress_line(f"{len(jobs)} job(s) through submitit ({settings['kind']}), at most {len(slots)} at a time")
    try:
        while pending or running:
            while pending and free:
                index, job = pending.pop()
                slot = free.pop()
                device = _configure(executor, settings, slot)
                running[executor.submit(_Call(function, os.getcwd(), device, settings), job)] = (index, slot)
            finished = [submitted for submitted in running if submitted.done()]
            if not finished:
                time.sleep(0.2 if local else 10)
            for submitted in finished:
                index, slot = running.pop(submitted)
                results[index] = submitted.result()
                free.append(slot)
    except BaseException:
        for submitted in running:
            submitted.cancel(check=False)
        raise
    return results


def _configure(executor: Any, settings: Mapping[str, Any], slot: str | None) -> str:
    """Set the executor up for the next job on ``slot``; returns the device name that job uses."""
    from gvsl.pipeline.workers import job_device, visible_gpu

    if slot is not None:  # submitit-local: the job sees this device alone
        gpus = () if slot == "cpu" else (int(visible_gpu(slot)),)
        executor.update_parameters(timeout_min=settings["timeout_min"], gpus_per_node=len(gpus), visible_gpus=gpus)
        return job_device(slot)
    memory = {"mem": f"{settings['mem_gb']}G"} if settings["mem_gb"] else {}
    executor.update_parameters(
        partition=settings["partition"],
        gpus_per_node=settings["gpus_per_job"],
        cpus_per_task=settings["cpus_per_job"],
        ntasks_per_node=1,
        nodes=1,
        time=settings["timeout_min"],
        job_name="gvsl",
        setup=list(settings["setup"]),
        additional_parameters=dict(settings["additional"]),
        **memory,
    )
    return "cuda:0" if settings["gpus_per_job"] else "cpu"


class _Call:
    """What an engine job runs: ``function(job, device)`` in the stage's working directory, at the thread
    count of a local worker on that device (one on the CPU: bit-identical results)."""

    def __init__(self, function: Any, cwd: str, device: str, settings: Mapping[str, Any]):
        self.function, self.cwd, self.device = function, cwd, device
        self.threads = 1 if device == "cpu" else int(settings.get("cpus_per_job") or 1)

    def __call__(self, job: Any) -> Any:
        import torch

        os.chdir(self.cwd)
        torch.set_num_threads(self.threads)
        return self.function(job, self.device)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """At SLURM's time limit: run again (a pre-training resumes from its last checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
