"""The DVC pipeline's stages as functions: a ``params.yaml`` mapping in, typed configs, files under ``build/``.

The notebooks in ``notebooks/`` receive ``params.yaml`` from papermill (``python -m gvsl.stage``) and call
these functions, so a stage run from a notebook, from Python or from a test does the same thing.
Folder layout (``dvc.yaml`` names the same paths):

* ``build/prepared/<TASK>``: prepared datasets (pretrain, SHC, SAC, CCC, SBM);
* ``build/pretrain/<method>/seed<S>``: one folder per pre-training seed, each with ``backbone.pt``
  (+ ``checkpoint.pt``, ``dvclive/`` for pre-trained methods, and ``pretext.json`` for those with a
  Z-matching head); ``scratch`` holds a freshly initialised backbone per seed, so every
  (method, seed) is one file;
* ``build/transfer/<method>/<TASK>-<protocol>``: one Table 1 cell, with one folder per (pre-training
  seed, transfer seed), ``p<S>-t<T>`` (``metrics.json``, ``model.pt``, ``dvclive/``), and
  ``summary.json`` over all of them; the method's one transfer stage writes all of its cells.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS
from gvsl.runtime import progress_line
from gvsl.table1 import METHODS, PROTOCOLS, TASKS

__all__ = ["BUILD", "METHODS", "PROTOCOLS", "TASKS", "prepared_dir", "pretrain_configs", "pretrain_dir",
           "pretrain_seeds", "transfer_dir", "prepare_stage", "pretrain_stage", "transfer_stage"]

BUILD = Path("build")

#: ``params.pretrain`` keys the stage reads itself (the rest build :class:`gvsl.pretrain.PretrainConfig`)
_PRETRAIN_STAGE_KEYS = {"seeds", "processes", "heldout", "options"}


def prepared_dir(task: str, build: Path = BUILD) -> Path:
    return Path(build) / "prepared" / task


def pretrain_dir(method: str, build: Path = BUILD, seed: int | None = None) -> Path:
    """``build/pretrain/<method>``, or the folder of one pre-training seed."""
    folder = Path(build) / "pretrain" / method
    return folder if seed is None else folder / f"seed{seed}"


def pretrain_seeds(params: Mapping[str, Any]) -> list[int]:
    """``params.pretrain.seeds``: every pre-trained method (and scratch) runs each."""
    seeds = _group(params, "pretrain", "seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GVSLInputError(f"params.yaml: pretrain.seeds repeats a seed: {seeds}")
    return seeds


def transfer_dir(task: str, protocol: str, method: str, build: Path = BUILD) -> Path:
    """``build/transfer/<method>/<TASK>-<protocol>``: one Table 1 cell (the method's stage writes all of its cells)."""
    return Path(build) / "transfer" / method / f"{task}-{protocol}"


def _group(params: Mapping[str, Any], *keys: str) -> Any:
    """``params[k1][k2]…`` with an error naming the missing ``params.yaml`` key."""
    value: Any = params
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise GVSLInputError(f"params.yaml: missing key {'.'.join(keys[:depth + 1])}")
        value = value[key]
    return value


def prepare_stage(task: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> Path:
    """Prepare ``task`` as ``params.prepare.tasks.<task>`` says (a generated cohort or a real dataset)."""
    from gvsl.data.prepare import prepare_request
    from gvsl.data.sources import PrepareRequest

    settings = dict(_group(params, "prepare", "tasks", task))
    seed = int(_group(params, "prepare", "seed"))
    try:
        request = PrepareRequest.from_params(settings, task=task, seed=seed, progress=progress)
        return prepare_request(request, prepared_dir(task, build), overwrite=True)
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: prepare.tasks.{task}: {err}") from None


def pretrain_configs(method: str, params: Mapping[str, Any]) -> list[Any]:
    """One :class:`gvsl.pretrain.PretrainConfig` per ``pretrain.seeds`` for a pre-training method, with its
    settings from ``pretrain.options.<method>`` (absent: the method's defaults)."""
    from gvsl.pretrain import PretrainConfig

    settings = {k: v for k, v in dict(_group(params, "pretrain")).items() if k not in _PRETRAIN_STAGE_KEYS}
    if "seed" in settings:
        raise GVSLInputError("params.yaml: pretrain.seed is replaced by pretrain.seeds (a list)")
    options = dict(_group(params, "pretrain")).get("options") or {}
    if not isinstance(options, Mapping):
        raise GVSLInputError(f"params.yaml: pretrain.options must map methods to their settings, got {options!r}")
    unknown = sorted(set(options) - set(PRETRAIN_METHODS))
    if unknown:
        raise GVSLInputError(f"params.yaml: pretrain.options: unknown methods {unknown}; valid: {list(PRETRAIN_METHODS)}")
    channels = tuple(_group(params, "model", "channels"))
    try:
        return [PretrainConfig.from_dict({**settings, "method": method, "channels": channels, "seed": seed,
                                          "options": dict(options.get(method) or {})})
                for seed in pretrain_seeds(params)]
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: pretrain ({method}): {err}") from None


def pretrain_stage(method: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> list[Path]:
    """Pre-train ``method`` once per ``pretrain.seeds``; ``scratch`` only initialises.

    Every ``pretrain.eval_every`` iterations each method's loss is measured on the held-out pairs of
    ``pretrain.heldout`` (a prepared task's split the pre-training never sees), which methods with a
    Z-matching head also register. Seeds run in ``pretrain.processes`` processes side by side.

    Returns the ``backbone.pt`` paths, one per seed.
    """
    from gvsl.checkpoint import save_backbone
    from gvsl.nets import UNet3D
    from gvsl.nets.unet import check_channels
    from gvsl.runtime import environment, git_commit

    # DVC keeps this stage's output folder between runs (persist), so that an interrupted run resumes
    # from its checkpoint; the folders of seeds no longer asked for must go
    wanted = {pretrain_dir(method, build, seed).name for seed in pretrain_seeds(params)}
    for stale in sorted(pretrain_dir(method, build).glob("seed*")):
        if stale.name not in wanted:
            shutil.rmtree(stale)
    if method == "scratch":
        channels = tuple(_group(params, "model", "channels"))
        check_channels(channels, "params.yaml: model.channels")
        backbones = []
        for seed in pretrain_seeds(params):
            # The pre-training seed: scratch starts exactly where every method of that seed starts.
            torch.manual_seed(seed)
            backbones.append(save_backbone(pretrain_dir(method, build, seed) / "backbone.pt", UNet3D(1, channels),
                                           method="scratch", iterations=0, seed=seed, commit=git_commit(),
                                           environment=environment()))
        return backbones
    configs = pretrain_configs(method, params)
    processes = _processes(params, "pretrain")
    heldout = _load_heldout(_group(params, "pretrain", "heldout"), configs[0].crop, build)
    jobs = [(config, build, heldout, progress) for config in configs]
    return _in_processes(_pretrain_seed, jobs, processes)


def _pretrain_seed(job: tuple[Any, Path, Any, bool]) -> Path:
    config, build, heldout, progress = job
    from gvsl.pretrain import RESUME_IF_UNCHANGED, pretrain_prepared

    out = pretrain_dir(config.method, build, config.seed)
    progress_line(f"pretrain {config.method} seed {config.seed}: {config.iterations} iterations")
    # an interrupted run of these very settings, data and code continues; anything else starts afresh
    result = pretrain_prepared(prepared_dir("pretrain", build), out, config, resume=RESUME_IF_UNCHANGED,
                               progress=progress, heldout=heldout)
    progress_line(f"pretrain {config.method} seed {config.seed}: done in {result.seconds:.0f} s "
                  f"({result.steps_per_second:.2f} steps/s)")
    return result.backbone


def _load_heldout(settings: Any, crop: tuple[int, ...], build: Path):
    """``params.pretrain.heldout`` = ``{task, split, pairs}`` → held-out pairs of that prepared task (required:
    ``dvc.yaml`` makes the pre-training stages depend on that task's prepared data)."""
    from gvsl.pretrain import load_heldout

    if not isinstance(settings, Mapping) or set(settings) != {"task", "split", "pairs"}:
        raise GVSLInputError(f"params.yaml: pretrain.heldout must be a mapping with keys task, split, pairs; "
                             f"got {settings!r}")
    try:
        return load_heldout(prepared_dir(str(settings["task"]), build), str(settings["split"]), crop,
                            int(settings["pairs"]))
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: pretrain.heldout: {err}") from None


def transfer_jobs(method: str, params: Mapping[str, Any], build: Path = BUILD) -> list[TransferJob]:
    """Every transfer run of ``method``: task × protocol × pre-training seed × transfer seed, longest first.

    ``params.transfer.<protocol>.crop.<task>`` may be ``null``: the training crop is then the prepared
    volume (every case of the generated cohorts has one shape), which lets a linear probe reuse its
    frozen features (see :class:`gvsl.transfer.TransferModel`).
    """
    from gvsl.data import load_prepared
    from gvsl.transfer import TransferConfig, num_outputs

    if method not in METHODS:
        raise GVSLInputError(f"unknown method {method!r}; valid: {list(METHODS)}")
    jobs = []
    for task in _group(params, "pipeline", "tasks"):
        if task not in TASKS:
            raise GVSLInputError(f"params.yaml: pipeline.tasks: unknown task {task!r}; valid: {list(TASKS)}")
        dataset = load_prepared(prepared_dir(task, build), task=task)
        info = dataset.info
        for protocol in PROTOCOLS:
            settings = dict(_group(params, "transfer", protocol))
            seeds = settings.pop("seeds", None)
            if not isinstance(seeds, list) or not seeds:
                raise GVSLInputError(f"params.yaml: transfer.{protocol}.seeds must be a non-empty list, got {seeds!r}")
            crop = _group(params, "transfer", protocol, "crop", task)
            settings.pop("crop")
            if isinstance(settings.get("iterations"), Mapping):  # a cap per task
                settings["iterations"] = _group(params, "transfer", protocol, "iterations", task)
            if crop is None:
                crop = dataset.load_case(dataset.ids("train")[0]).image.shape[-3:]
            for pretrain_seed in pretrain_seeds(params):
                for seed in seeds:
                    try:
                        config = TransferConfig.from_dict({
                            **settings, "task": info.task_type, "protocol": protocol, "crop": tuple(crop),
                            "num_classes": num_outputs(info.task_type, info.classes), "seed": int(seed)})
                    except GVSLInputError as err:
                        raise GVSLInputError(f"params.yaml: transfer.{protocol} ({task}): {err}") from None
                    jobs.append(TransferJob(task, protocol, method, int(pretrain_seed), int(seed), config, build))
    # Roughly the longest first (fine-tuning before probes on cached features, then steps × crop volume),
    # so that the process pool ends evenly.
    return sorted(jobs, key=lambda job: (job.config.protocol != "finetune",
                                         -job.config.iterations * math.prod(job.config.crop)))


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
    def name(self) -> str:
        return f"{self.task}-{self.protocol}-{self.method} p{self.pretrain_seed}-t{self.seed}"

    @property
    def out(self) -> Path:
        return transfer_dir(self.task, self.protocol, self.method, self.build) / f"p{self.pretrain_seed}-t{self.seed}"

    @property
    def backbone(self) -> Path:
        return pretrain_dir(self.method, self.build, self.pretrain_seed) / "backbone.pt"


#: written into a run's folder once the run has finished: what it was made with
RUN_INPUTS = "inputs.json"


def _with_inputs(jobs: list[TransferJob]) -> list[TransferJob]:
    """The jobs with their inputs: settings, and digests of the backbone, the prepared data and the code."""
    from gvsl.runtime import code_digest, files_digest

    code = code_digest()
    data = {task: files_digest(prepared_dir(task, jobs[0].build)) for task in {job.task for job in jobs}}
    backbones = {path: files_digest(path) for path in {job.backbone for job in jobs}}
    return [replace(job, inputs=json.loads(json.dumps({
        "config": job.config.to_dict(), "backbone": backbones[job.backbone], "data": data[job.task], "code": code})))
        for job in jobs]


def _run_inputs(job: TransferJob) -> dict[str, Any]:
    # the thread count fixes the order of CPU float reductions, so it is an input like the settings
    return {**job.inputs, "threads": torch.get_num_threads()}


def _finished_run(job: TransferJob) -> dict[str, Any] | None:
    """The metrics of an earlier run of ``job`` that finished with the same inputs, else None."""
    try:
        saved = json.loads((job.out / RUN_INPUTS).read_text())
        metrics = json.loads((job.out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if saved == _run_inputs(job) else None


def _remove_stale_runs(method: str, jobs: list[TransferJob], build: Path) -> None:
    """Folders of cells and runs the settings no longer ask for: the stage's output folder persists
    across runs (an interrupted stage keeps its finished runs), and the report reads every cell in it."""
    root = build / "transfer" / method
    runs = {job.out for job in jobs}
    cells = {job.out.parent for job in jobs}
    for cell in (p for p in root.glob("*") if p.is_dir()):
        if cell not in cells:
            shutil.rmtree(cell)
            continue
        for run in (p for p in cell.glob("*") if p.is_dir() and p not in runs):
            shutil.rmtree(run)


def _run_transfer_job(job: TransferJob) -> dict[str, Any]:
    from gvsl.transfer import transfer_prepared

    if (finished := _finished_run(job)) is not None:
        progress_line(f"transfer {job.name}: kept from an earlier run with the same settings, backbone, data and code")
        return finished
    if job.out.exists():
        shutil.rmtree(job.out)  # an interrupted or outdated run: nothing of it may mix into this one
    result = transfer_prepared(prepared_dir(job.task, job.build), job.out, str(job.backbone), job.config,
                               progress=False)
    (job.out / RUN_INPUTS).write_text(json.dumps(_run_inputs(job), indent=2) + "\n")
    state = "plateaued" if result.converged else "not plateaued"
    progress_line(f"transfer {job.name}: test {result.metric_name} {result.test[result.metric_name]:.3f}, best "
                  f"iteration {result.best_iteration} of {result.iterations} ({state}), {result.seconds:.0f} s")
    return json.loads((job.out / "metrics.json").read_text())


def transfer_stage(method: str, params: Mapping[str, Any], build: Path = BUILD) -> list[dict[str, Any]]:
    """Run every Table 1 cell of ``method`` (see :func:`transfer_jobs`); write one ``summary.json`` per cell.

    Runs go to ``params.transfer.processes`` processes side by side, at an equal share of the CPU
    threads each. A summary's ``test``, ``val_curves``, ``converged`` and ``per_case`` list one entry
    per run, in the order of ``runs`` (``[pre-training seed, transfer seed]`` pairs); ``mean`` and
    ``sd`` are over all runs; ``converged`` is true when every run's validation curve plateaued
    (:class:`gvsl.transfer.PlateauRule`); ``seconds`` is the runs' training time added up.

    A run whose folder holds a finished run with the same inputs (settings, threads, backbone, prepared data,
    ``gvsl`` code; :data:`RUN_INPUTS`) is kept, not trained again: DVC keeps the stage's folder
    (``persist``), so a ``dvc repro`` interrupted during transfer resumes with the runs it had not
    finished. Folders of runs and cells the settings no longer ask for are removed.
    """
    jobs = _with_inputs(transfer_jobs(method, params, build))
    _remove_stale_runs(method, jobs, build)
    processes = _processes(params, "transfer")
    progress_line(f"transfer {method}: {len(jobs)} runs in {processes} process(es)")
    began = time.perf_counter()
    records = _in_processes(_run_transfer_job, jobs, processes)
    seconds = time.perf_counter() - began
    summaries = []
    cells = sorted({(job.task, job.protocol) for job in jobs}, key=lambda cell: (TASKS.index(cell[0]), cell[1]))
    for task, protocol in cells:
        chosen = sorted(((job, record) for job, record in zip(jobs, records)
                         if (job.task, job.protocol) == (task, protocol)), key=lambda pair: (pair[0].pretrain_seed, pair[0].seed))
        summary = _cell_summary([job for job, _ in chosen], [record for _, record in chosen], params)
        path = transfer_dir(task, protocol, method, build) / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        summaries.append(summary)
    progress_line(f"transfer {method}: done in {seconds:.0f} s")
    return summaries


def _cell_summary(jobs: list[TransferJob], records: list[dict[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    from gvsl.runtime import git_commit

    first = records[0]
    tests = [r["test"][r["metric"]] for r in records]
    finite = [t for t in tests if not math.isnan(t)]
    return {
        "task": jobs[0].task, "protocol": jobs[0].protocol, "method": jobs[0].method, "metric": first["metric"],
        "seeds": sorted({job.seed for job in jobs}), "pretrain_seeds": sorted({job.pretrain_seed for job in jobs}),
        "runs": [[job.pretrain_seed, job.seed] for job in jobs], "test": tests,
        "mean": statistics.fmean(finite) if finite else math.nan,
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan, "n_runs": len(finite),
        "per_class": {name.split("/", 1)[1]: [r["test"][name] for r in records] for name in first["test"] if "/" in name},
        "val_curves": [r["val_curve"] for r in records], "best_iterations": [r["best_iteration"] for r in records],
        "iterations": [r["iterations"] for r in records], "run_converged": [r["converged"] for r in records],
        "converged": all(r["converged"] for r in records), "plateau": first["plateau"],
        "case_ids": first["per_case"]["ids"], "per_case": [r["per_case"] for r in records],
        "seconds": sum(r["seconds"] for r in records), "dataset": first["dataset"],
        "environments": [dict(e) for e in {json.dumps(r.get("environment"), sort_keys=True): r.get("environment")
                                            for r in records if r.get("environment")}.values()],
        "dataset_source": first["dataset_source"], "profile": str(params.get("profile", "unnamed")),
        "commit": git_commit(),
    }


def _processes(params: Mapping[str, Any], group: str) -> int:
    processes = _group(params, group, "processes")
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise GVSLInputError(f"params.yaml: {group}.processes must be an integer >= 1, got {processes!r}")
    return processes


def _in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], processes: int) -> list[Any]:
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


def find_project(start: Path | None = None) -> Path:
    """The folder holding ``params.yaml`` and ``dvc.yaml``: the current one or a parent."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise GVSLInputError(f"no params.yaml and dvc.yaml in {here} or its parents; run from the project")


def notebook_params(**injected: Any) -> dict[str, Any]:
    """The stage's settings inside a notebook, and the working directory set to the project root.

    papermill injects ``params.yaml``'s groups into the notebook's parameters cell (:mod:`gvsl.stage`);
    run by hand, those parameters keep their ``None`` defaults and are read from ``params.yaml``
    here, so both ways see one source of settings.
    """
    import os

    import yaml

    root = find_project()
    os.chdir(root)
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    params.update({key: value for key, value in injected.items() if value is not None})
    return params
