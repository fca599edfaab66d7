"""The transfer stage: every Table 1 cell of one method, its runs kept when their inputs are unchanged."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Settings, as_settings
from gvsl.pipeline.layout import BUILD, prepared_dir, pretrain_dir, transfer_dir
from gvsl.pipeline.workers import run_jobs
from gvsl.provenance import changed_inputs
from gvsl.runtime import progress_line
from gvsl.table1 import METHODS, PROTOCOLS


def transfer_seed(pretrain_seed: int, listed: int, seeds: Sequence[int]) -> int:
    """The transfer seed of the run of ``pretrain_seed`` for the listed ``transfer.<protocol>.seeds`` entry
    ``listed``: ``listed + pretrain_seed × (max(seeds) + 1)``.

    Every run of a cell thus has its own transfer seed (head initialisation, crops, batch order), so the
    runs of different pre-training seeds are independent replicates of the whole pipeline, not replicates
    that share one transfer seed. With the default's ``seeds: [0]`` the run of pre-training seed p uses transfer
    seed p; with the paper's ``[0, 1, 2]`` pre-training seed 0 uses 0, 1, 2 and seed 1 would use 3, 4, 5. The
    same listed seeds give the same transfer seeds to every method, so each method's run pairs with scratch's
    run of the same pre-training and transfer seeds (:func:`gvsl.report.gain_interval`).
    """
    return int(listed) + int(pretrain_seed) * (max(int(s) for s in seeds) + 1)


def transfer_jobs(method: str, settings: Settings | Mapping[str, Any], build: Path = BUILD) -> list[TransferJob]:
    """Every transfer run of ``method``: task × protocol × pre-training seed × ``transfer.<protocol>.seeds``,
    each run with its own transfer seed (:func:`transfer_seed`), longest first.

    ``transfer.<protocol>.crop.<task>`` may be ``null``: the training crop is then the prepared
    volume (every case of the generated cohorts has one shape), which lets a linear probe reuse its
    frozen features (see :class:`gvsl.transfer.TransferModel`).
    """
    from gvsl.data import load_prepared
    from gvsl.transfer import TransferConfig, num_outputs

    settings = as_settings(settings)
    if method not in METHODS:
        raise GVSLInputError(f"unknown method {method!r}; valid: {list(METHODS)}")
    jobs = []
    for task in settings.pipeline.tasks:
        dataset = load_prepared(prepared_dir(task, build), task=task)
        info = dataset.info
        for protocol in PROTOCOLS:
            runs = settings.transfer.protocol(protocol)
            try:
                schedule, crop = runs.schedule(task), runs.task_crop(task)
            except GVSLInputError as err:
                raise GVSLInputError(f"params.yaml: transfer.{protocol}: {err}") from None
            if crop is None:
                crop = dataset.load_case(dataset.ids("train")[0]).image.shape[-3:]
            runs_of_cell = [
                (pretrain_seed, transfer_seed(pretrain_seed, listed, runs.seeds), fraction)
                for fraction in runs.fractions
                for pretrain_seed in settings.pretrain.seeds
                for listed in runs.seeds
            ]
            for pretrain_seed, seed, fraction in runs_of_cell:
                try:
                    config = TransferConfig(
                        **schedule,
                        task=info.task_type,
                        protocol=protocol,
                        crop=tuple(crop),
                        num_classes=num_outputs(info.task_type, info.classes),
                        seed=seed,
                        label_fraction=fraction,
                    )
                except GVSLInputError as err:
                    raise GVSLInputError(f"params.yaml: transfer.{protocol} ({task}): {err}") from None
                jobs.append(TransferJob(task, protocol, method, int(pretrain_seed), int(seed), config, build))
    # Roughly the longest first (fine-tuning before probes on cached features, then steps × crop volume),
    # so that the process pool ends evenly.
    return sorted(
        jobs, key=lambda job: (job.config.protocol != "finetune", -job.config.iterations * math.prod(job.config.crop))
    )


@dataclass(frozen=True)
class TransferJob:
    """One transfer run: a Table 1 cell's (pre-training seed, transfer seed).

    ``inputs`` identify what the run reads (settings, backbone, prepared data, code); a finished run
    whose recorded inputs are the same is kept instead of trained again (:func:`transfer_stage`).
    """

    task: str
    protocol: str
    method: str
    pretrain_seed: int
    seed: int
    config: Any
    build: Path
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """The fraction of the labelled training cases the run trains on (1: a Table 1 run)."""
        return self.config.label_fraction

    @property
    def name(self) -> str:
        labels = "" if self.fraction == 1 else f" ({self.fraction:g} of the labels)"
        return f"{self.task}-{self.protocol}-{self.method} p{self.pretrain_seed}-t{self.seed}{labels}"

    @property
    def cell(self) -> Path:
        """The folder of the run's cell: Table 1's, or a label-efficiency cell beside it."""
        return transfer_dir(self.task, self.protocol, self.method, self.build, self.fraction)

    @property
    def out(self) -> Path:
        return self.cell / f"p{self.pretrain_seed}-t{self.seed}"

    @property
    def backbone(self) -> Path:
        return pretrain_dir(self.method, self.build, self.pretrain_seed) / "backbone.pt"


#: written into a run's folder once the run has finished: what it was made with
RUN_INPUTS = "inputs.json"


def _weights_digest(path: Path) -> str:
    """A digest of a backbone's widths and weights. Not of the whole file: its metadata (commit,
    environment) changes whenever an unchanged pre-training stage runs again, and scratch's every time."""
    from gvsl.checkpoint import load_file

    state = load_file(path)
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(json.dumps([state.get("in_channels"), state.get("channels")]).encode())
    for key, tensor in state["state_dict"].items():
        hasher.update(key.encode())
        hasher.update(tensor.contiguous().numpy().tobytes())
    return hasher.hexdigest()


def _with_inputs(jobs: list[TransferJob]) -> list[TransferJob]:
    """The jobs with their inputs: settings, and digests of the backbone, the prepared data and the code."""
    from gvsl.provenance import code_digest, files_digest

    code = code_digest()
    data = {task: files_digest(prepared_dir(task, jobs[0].build)) for task in {job.task for job in jobs}}
    backbones = {path: _weights_digest(path) for path in {job.backbone for job in jobs}}
    return [
        replace(
            job,
            inputs=json.loads(
                json.dumps(
                    {
                        "config": job.config.to_dict(),
                        "backbone": backbones[job.backbone],
                        "data": data[job.task],
                        "code": code,
                    }
                )
            ),
        )
        for job in jobs
    ]


def _run_inputs(job: TransferJob) -> dict[str, Any]:
    """The job's inputs with what the process running it adds: the thread count, which fixes the order
    of CPU float reductions, and the package versions and device (:func:`gvsl.provenance.environment`: ``cpu``
    or ``cuda:0``, a worker's only visible GPU, whichever GPU of the node that is)."""
    from gvsl.provenance import environment
    from gvsl.runtime import resolve_device

    return {
        **job.inputs,
        "threads": torch.get_num_threads(),
        "environment": environment(resolve_device(job.config.device)),
    }


def _finished_run(job: TransferJob) -> dict[str, Any] | None:
    """The metrics of an earlier run of ``job`` that finished with the same inputs, else None."""
    try:
        saved = json.loads((job.out / RUN_INPUTS).read_text())
        metrics = json.loads((job.out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return None if changed_inputs(saved, _run_inputs(job)) else metrics


def _remove_stale_runs(method: str, jobs: list[TransferJob], build: Path) -> None:
    """Folders of cells and runs the settings no longer ask for: the stage's output folder persists
    across runs (an interrupted stage keeps its finished runs), and the report reads every cell in it."""
    root = build / "transfer" / method
    runs = {job.out for job in jobs}
    cells = {job.cell for job in jobs}
    for cell in (p for p in root.glob("*") if p.is_dir()):
        if cell not in cells:
            shutil.rmtree(cell)
            continue
        for run in (p for p in cell.glob("*") if p.is_dir() and p not in runs):
            shutil.rmtree(run)


def _run_transfer_job(job: TransferJob, device: str) -> dict[str, Any]:
    from gvsl.transfer import transfer_prepared

    job = replace(job, config=replace(job.config, device=device))  # the worker's device (gvsl.pipeline.workers)

    if (finished := _finished_run(job)) is not None:
        progress_line(f"transfer {job.name}: kept from an earlier run with the same settings, backbone, data and code")
        return finished
    if job.out.exists():
        shutil.rmtree(job.out)  # an interrupted or outdated run: nothing of it may mix into this one
    result = transfer_prepared(
        prepared_dir(job.task, job.build), job.out, str(job.backbone), job.config, progress=False
    )
    (job.out / RUN_INPUTS).write_text(json.dumps(_run_inputs(job), indent=2) + "\n")
    state = "plateaued" if result.converged else "not plateaued"
    progress_line(
        f"transfer {job.name}: test {result.metric_name} {result.test[result.metric_name]:.3f}, best "
        f"iteration {result.best_iteration} of {result.iterations} ({state}), {result.seconds:.0f} s"
    )
    return json.loads((job.out / "metrics.json").read_text())


def transfer_stage(method: str, settings: Settings | Mapping[str, Any], build: Path = BUILD) -> list[dict[str, Any]]:
    """Run every Table 1 cell of ``method`` (see :func:`transfer_jobs`); write one ``summary.json`` per cell.

    Runs go side by side to ``transfer.devices``, one run per device at a time
    (:func:`gvsl.pipeline.workers.run_jobs`; on the CPU ``transfer.processes`` workers at one thread each). A
    summary's ``test``, ``val_curves``, ``converged`` and ``per_case`` list one entry
    per run, in the order of ``runs`` (``[pre-training seed, transfer seed]`` pairs); ``mean`` and
    ``sd`` are over all runs; ``converged`` is true when every run's validation curve plateaued
    (:class:`gvsl.transfer.PlateauRule`); ``seconds`` is the runs' training time added up.

    A run whose folder holds a finished run with the same inputs (settings, threads, environment,
    backbone weights, prepared data, ``gvsl`` code; :data:`RUN_INPUTS`) is kept, not trained again:
    DVC keeps the stage's folder (``persist``), so a ``dvc repro`` interrupted during transfer resumes
    with the runs it had not finished. Folders of runs and cells the settings no longer ask for are removed.
    """
    settings = as_settings(settings)
    jobs = _with_inputs(transfer_jobs(method, settings, build))
    _remove_stale_runs(method, jobs, build)
    progress_line(f"transfer {method}: {len(jobs)} runs")
    began = time.perf_counter()
    records = run_jobs(_run_transfer_job, jobs, settings, "transfer")
    seconds = time.perf_counter() - began
    summaries = []
    cells = sorted({job.cell for job in jobs})
    for cell in cells:
        chosen = sorted(
            ((job, record) for job, record in zip(jobs, records) if job.cell == cell),
            key=lambda pair: (pair[0].pretrain_seed, pair[0].seed),
        )
        summary = _cell_summary([job for job, _ in chosen], [record for _, record in chosen], settings.profile)
        path = cell / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        summaries.append(summary)
    progress_line(f"transfer {method}: done in {seconds:.0f} s")
    return summaries


def _cell_summary(jobs: list[TransferJob], records: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    from gvsl.provenance import git_commit

    first = records[0]
    tests = [r["test"][r["metric"]] for r in records]
    finite = [t for t in tests if not math.isnan(t)]
    return {
        "task": jobs[0].task,
        "protocol": jobs[0].protocol,
        "method": jobs[0].method,
        "fraction": jobs[0].fraction,
        "train_cases": [r.get("train_cases") for r in records],
        "metric": first["metric"],
        "seeds": sorted({job.seed for job in jobs}),
        "pretrain_seeds": sorted({job.pretrain_seed for job in jobs}),
        "runs": [[job.pretrain_seed, job.seed] for job in jobs],
        "test": tests,
        "mean": statistics.fmean(finite) if finite else math.nan,
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan,
        "n_runs": len(finite),
        "per_class": {
            name.split("/", 1)[1]: [r["test"][name] for r in records] for name in first["test"] if "/" in name
        },
        "val_curves": [r["val_curve"] for r in records],
        "best_iterations": [r["best_iteration"] for r in records],
        "iterations": [r["iterations"] for r in records],
        "run_converged": [r["converged"] for r in records],
        "converged": all(r["converged"] for r in records),
        "plateau": first["plateau"],
        "case_ids": first["per_case"]["ids"],
        "per_case": [r["per_case"] for r in records],
        "seconds": sum(r["seconds"] for r in records),
        "dataset": first["dataset"],
        "environments": [
            dict(e)
            for e in {
                json.dumps(r.get("environment"), sort_keys=True): r.get("environment")
                for r in records
                if r.get("environment")
            }.values()
        ],
        "dataset_source": first["dataset_source"],
        "profile": profile,
        "commit": git_commit(),
    }
