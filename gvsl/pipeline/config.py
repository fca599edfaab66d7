"""The pipeline's settings: ``params.yaml`` as one typed, validated tree (:class:`Settings`).

The classes below hold every setting's default, and the defaults are the paper's (He et al., CVPR 2023,
Sec. 4.1, on its datasets). A profile is an overlay: a YAML file that names only what it changes.
``params.yaml`` is the embedded default profile (generated cohorts, a 2-core CPU, narrow networks, short
schedules); ``profiles/paper.yaml`` names the paper's profile and changes nothing. :func:`load_settings`
lays the overlays over the defaults in order and builds the tree once; a typo, a value of the wrong type
or out of bounds is a one-line :class:`~gvsl.errors.GVSLInputError` naming its dotted key.

Overlays merge key by key (:func:`gvsl.settings.merge`), but a prepared task whose ``source`` changes and
an executor whose ``kind`` changes are replaced whole: the settings of one source or engine mean nothing
to another.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from gvsl.errors import GVSLInputError
from gvsl.methods import PRETRAIN_METHODS, SCRATCH, build_method
from gvsl.nets import PAPER_CHANNELS
from gvsl.nets.unet import check_channels
from gvsl.pretrain.config import NonNegative, PretrainConfig, PretrainSchedule
from gvsl.pretrain.heldout import HeldoutSettings
from gvsl.settings import Bounds, Checked, OneOf, from_mapping, merge, to_mapping
from gvsl.table1 import METHODS, PROTOCOLS, TASKS
from gvsl.transfer.config import STEPS, TransferSchedule

__all__ = [
    "PARAMS",
    "HeldoutSettings",
    "ModelSettings",
    "PipelineSettings",
    "PrepareSettings",
    "PretrainSettings",
    "ProtocolSettings",
    "ReportSettings",
    "Settings",
    "TransferSettings",
    "as_settings",
    "compose",
    "load_settings",
]

#: the pipeline's parameters file, which DVC reads: the default profile
PARAMS = Path("params.yaml")
#: keys whose change replaces a mapping instead of merging into it (a prepared task's source, an executor's kind)
REPLACED_WHEN_CHANGED = ("source", "kind")

Seeds = Annotated[tuple[int, ...], Bounds(0, integer=True)]


def _distinct(name: str, values: Sequence[Any]) -> None:
    if not values:
        raise GVSLInputError(f"{name} must not be empty")
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if repeated:
        raise GVSLInputError(f"{name} repeats {repeated}")


@dataclass(kw_only=True)
class PipelineSettings(Checked):
    """What the pipeline runs.

    Args:
        tasks: Table 1's tasks (SHC, SAC, CCC, SBM).
        methods: backbone initialisations: ``scratch`` (none) and the pre-training methods of
            :mod:`gvsl.methods`; the paper's Table 1 has all thirteen.
    """

    tasks: Annotated[tuple[str, ...], OneOf(TASKS)] = TASKS
    methods: Annotated[tuple[str, ...], OneOf(METHODS)] = METHODS

    def __post_init__(self):
        super().__post_init__()
        _distinct("tasks", self.tasks)
        _distinct("methods", self.methods)

    @property
    def pretrained(self) -> list[str]:
        """The methods that pre-train (all but scratch)."""
        return [method for method in self.methods if method != SCRATCH]


def _paper_datasets() -> dict[str, dict[str, Any]]:
    return {
        "pretrain": {"source": "folder", "root": "data/pretrain"},
        "SHC": {"source": "mmwhs", "root": "data/mmwhs"},
        "SAC": {"source": "asoca", "root": "data/asoca"},
        "CCC": {"source": "stoic", "root": "data/stoic"},
        "SBM": {"source": "candi", "root": "data/candi"},
    }


@dataclass(kw_only=True)
class PrepareSettings(Checked):
    """Which data each task prepares.

    Args:
        seed: base seed of generated subjects and of splits.
        tasks: one prepared dataset per task (``pretrain`` and Table 1's), each the settings of a
            :class:`gvsl.data.sources.PrepareRequest`: a ``source`` and its options (real sources read a
            ``root`` under ``data/``). The paper's datasets by default; an overlay's ``null`` removes a task.
    """

    seed: NonNegative = 0
    tasks: dict[str, dict[str, Any] | None] = field(default_factory=_paper_datasets)

    def __post_init__(self):
        super().__post_init__()
        self.tasks = {task: spec for task, spec in self.tasks.items() if spec is not None}
        for task in self.tasks:
            self.request(task)  # every task's settings are checked when the settings are read

    def request(self, task: str, progress: bool = False):
        """The :class:`~gvsl.data.sources.PrepareRequest` of ``task``."""
        from gvsl.data.sources import PrepareRequest

        if task not in self.tasks:
            raise GVSLInputError(f"prepare.tasks: no task {task!r}; the settings list {sorted(self.tasks)}")
        try:
            return PrepareRequest.from_params(self.tasks[task], task=task, seed=self.seed, progress=progress)
        except GVSLInputError as err:
            raise GVSLInputError(f"tasks.{task}: {err}") from None


@dataclass(kw_only=True)
class ModelSettings(Checked):
    """The backbone.

    Args:
        channels: nine U-Net widths, five down and four up (paper 32, 64, 128, 256, 512, 256, 128, 64, 32).
    """

    channels: tuple[int, ...] = PAPER_CHANNELS

    def __post_init__(self):
        super().__post_init__()
        check_channels(self.channels, "channels")


@dataclass(kw_only=True)
class Workers(Checked):
    """Where a stage's runs go.

    Args:
        processes: CPU workers, each at one thread (``auto``: one per available core): the thread count
            fixes the order of CPU float reductions, so results are bit-identical whatever the number of
            processes.
        devices: ``auto`` (every visible CUDA device, else ``processes`` CPU workers) or a list such as
            ``[cuda:0, cuda:1]``; one run per device at a time (:mod:`gvsl.pipeline.devices`).
    """

    processes: Annotated[int | str, Bounds(1, integer=True, also=("auto",))] = 1
    devices: str | tuple[str, ...] = "auto"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.devices, str) and self.devices != "auto":
            raise GVSLInputError(f"devices must be auto or a list of devices, got {self.devices!r}")


@dataclass(kw_only=True)
class PretrainSettings(PretrainSchedule, Workers):
    """The pre-training stage: :class:`~gvsl.pretrain.config.PretrainSchedule` for every run, and the runs.

    Args:
        seeds: every pre-trained method (and scratch) runs each seed; a claim needs at least
            :data:`gvsl.stats.MIN_SEEDS` of them (the paper pre-trains once).
        heldout: held-out pairs evaluated every ``eval_every`` iterations (null: none).
        options: each method's own settings, e.g. ``{simclr: {temperature: 0.2}}``; a method left out keeps
            its defaults (:mod:`gvsl.methods`).
    """

    seeds: Seeds = (0,)
    heldout: HeldoutSettings | None = field(default_factory=HeldoutSettings)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        _distinct("seeds", self.seeds)
        OneOf(tuple(PRETRAIN_METHODS)).check("options", list(self.options))
        for method, options in self.options.items():
            try:  # a bad option of a method fails when the settings are read
                build_method(method, options)
            except GVSLInputError as err:  # it names pretrain.options.<method>: said from this group
                raise GVSLInputError(str(err).removeprefix("pretrain.")) from None

    def configs(self, method: str, channels: Sequence[int]) -> list[PretrainConfig]:
        """One :class:`~gvsl.pretrain.config.PretrainConfig` of ``method`` per seed."""
        schedule = {
            name: value
            for name, value in vars(self).items()
            if name in PretrainSchedule.__dataclass_fields__ and name != "seeds"
        }
        try:
            return [
                PretrainConfig(
                    **schedule,
                    method=method,
                    channels=tuple(channels),
                    seed=seed,
                    options=dict(self.options.get(method) or {}),
                )
                for seed in self.seeds
            ]
        except GVSLInputError as err:
            raise GVSLInputError(f"params.yaml: pretrain ({method}): {err}") from None


@dataclass(kw_only=True)
class ProtocolSettings(TransferSchedule):
    """One transfer protocol's runs: :class:`~gvsl.transfer.config.TransferSchedule`, per task where it says so.

    Args:
        seeds: transfer runs per pre-training seed; each gets its own transfer seed
            (:func:`gvsl.pipeline.stage_transfer.transfer_seed`).
        crop: each task's training crop, also its sliding window at inference, or null for whole prepared
            volumes (a linear probe then reuses its frozen features): the paper's random 96³ crops and 96³
            windows (SHC, SAC), the centre 128³ of the lung box (CCC) and the whole 160×160×128 CANDI crop (SBM).
        iterations: the cap, one for every task or one per task.
        fractions: the fractions of each task's labelled training cases that runs train on (1 included: Table
            1's cells); every fraction runs every seed, on nested, seeded subsets
            (:func:`gvsl.transfer.cases.label_subset`), for the label-efficiency curves.
    """

    seeds: Seeds = (0, 1, 2)
    fractions: Annotated[tuple[float, ...], Bounds(0.0, 1.0, open_low=True, words="fractions in (0, 1]")] = (
        0.25,
        0.5,
        1.0,
    )
    crop: Annotated[dict[str, tuple[int, int, int] | None], Bounds(1, integer=True)] = field(
        default_factory=lambda: {"SHC": (96, 96, 96), "SAC": (96, 96, 96), "CCC": (128, 128, 128), "SBM": None}
    )
    iterations: Annotated[int | dict[str, int], STEPS] = 40_000
    min_iterations: NonNegative = 2000

    def __post_init__(self):
        super().__post_init__()
        _distinct("seeds", self.seeds)
        _distinct("fractions", self.fractions)
        if 1.0 not in self.fractions:
            raise GVSLInputError(f"fractions must include 1 (Table 1's runs), got {list(self.fractions)}")

    def cap(self, task: str) -> int:
        """The iteration cap of ``task``."""
        if isinstance(self.iterations, int):
            return self.iterations
        if task not in self.iterations:
            raise GVSLInputError(f"iterations: no cap for {task} (caps: {sorted(self.iterations)})")
        return self.iterations[task]

    def task_crop(self, task: str) -> tuple[int, int, int] | None:
        if task not in self.crop:
            raise GVSLInputError(f"crop: no entry for {task}: give its crop or null (whole volumes)")
        return self.crop[task]

    def schedule(self, task: str) -> dict[str, Any]:
        """The :class:`TransferSchedule` settings of a run of ``task``."""
        values = {name: getattr(self, name) for name in TransferSchedule.__dataclass_fields__}
        return {**values, "iterations": self.cap(task)}


@dataclass(kw_only=True)
class TransferSettings(Workers):
    """The transfer stages.

    The linear protocol's plateau rule goes without the rise (a probe can peak at its first validation: the
    default profile's CCC probes whose best validation was the first ran to their 3000-iteration cap with it),
    and both protocols weight the cross-entropy by the inverse class frequency (without it a probe on the
    default's small cohorts predicts background only).

    Args:
        linear: the frozen-backbone protocol.
        finetune: the protocol that trains every parameter.
    """

    linear: ProtocolSettings = field(default_factory=lambda: ProtocolSettings(plateau_needs_rise=False))
    finetune: ProtocolSettings = field(default_factory=ProtocolSettings)

    def protocol(self, name: str) -> ProtocolSettings:
        OneOf(PROTOCOLS).check("protocol", name)
        return getattr(self, name)


@dataclass(kw_only=True)
class FigureCell(Checked):
    """One Table 1 cell that a figure draws.

    Args:
        task: a Table 1 task.
        protocol: ``linear`` or ``finetune``.
    """

    task: Annotated[str, OneOf(TASKS)] = "SHC"
    protocol: Annotated[str, OneOf(PROTOCOLS)] = "finetune"


@dataclass(kw_only=True)
class TsneSettings(Checked):
    """The t-SNE of local features (Fig. 7).

    Args:
        max_per_class: voxels drawn per class of the SHC test cases.
        seed: seeds the draw and the embedding.
    """

    max_per_class: Annotated[int, STEPS] = 200
    seed: NonNegative = 0


@dataclass(kw_only=True)
class ReportSettings(Checked):
    """The report.

    Args:
        finetune_claims: test claims on the fine-tune cells (false where their schedules are a fixed
            budget far from convergence).
        fig6: the cell whose validation curves Fig. 6 draws.
        tsne: Fig. 7's t-SNE.
    """

    finetune_claims: bool = True
    fig6: FigureCell = field(default_factory=FigureCell)
    tsne: TsneSettings = field(default_factory=TsneSettings)


def _local_executor() -> dict[str, Any]:
    return {"kind": "local"}


@dataclass(kw_only=True)
class Settings(Checked):
    """All of the pipeline's settings (``params.yaml``, over the paper's defaults).

    Args:
        profile: the profile's name, written into every result.
        pipeline: what runs.
        prepare: which data.
        model: the backbone.
        pretrain: the pre-training stage.
        transfer: the transfer stages.
        executor: what runs the jobs: ``{kind: local}`` or a cluster engine (:mod:`gvsl.pipeline.cluster`).
        report: the report.
    """

    profile: str = "paper"
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    executor: dict[str, Any] = field(default_factory=_local_executor)
    report: ReportSettings = field(default_factory=ReportSettings)

    def __post_init__(self):
        from gvsl.pipeline.cluster import executor_settings

        super().__post_init__()
        self.executor = executor_settings(self.executor)
        heldout = [self.pretrain.heldout.task] if self.pretrain.heldout is not None else []
        missing = [
            t for t in dict.fromkeys(["pretrain", *self.pipeline.tasks, *heldout]) if t not in self.prepare.tasks
        ]
        if missing:
            raise GVSLInputError(f"prepare.tasks: no settings for {missing}, which the pipeline reads")

    def to_mapping(self) -> dict[str, Any]:
        """Every setting as plain YAML data (what :func:`compose` reads back to the same settings)."""
        return to_mapping(self)

    def pretrain_configs(self, method: str) -> list[PretrainConfig]:
        """One run's settings per pre-training seed of ``method``."""
        return self.pretrain.configs(method, self.model.channels)


def compose(*overlays: Mapping[str, Any], where: str = "params.yaml") -> Settings:
    """The paper's defaults with ``overlays`` laid over them in order, as :class:`Settings`."""
    values = to_mapping(Settings())
    for overlay in overlays:
        if not isinstance(overlay, Mapping):
            raise GVSLInputError(f"{where}: expected a mapping of settings, got {type(overlay).__name__}")
        values = merge(values, overlay, replace_when_changed=REPLACED_WHEN_CHANGED)
    return from_mapping(Settings, values, where)


def read_overlay(path: str | Path) -> dict[str, Any]:
    """A profile file's settings (an empty file changes nothing)."""
    path = Path(path)
    if not path.is_file():
        raise GVSLInputError(f"{path}: no such settings file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GVSLInputError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, Mapping):
        raise GVSLInputError(f"{path}: must hold a mapping of settings")
    return dict(values)


def load_settings(path: str | Path = PARAMS, overlays: Sequence[str | Path] = ()) -> Settings:
    """The settings of ``path`` (default ``params.yaml``), then each of ``overlays``, over the paper's defaults."""
    files = [Path(path), *map(Path, overlays)]
    return compose(*(read_overlay(file) for file in files), where=" + ".join(map(str, files)))


def as_settings(settings: Settings | Mapping[str, Any]) -> Settings:
    """``settings`` as :class:`Settings`; a mapping is an overlay of the defaults (e.g. a ``params.yaml``'s)."""
    return settings if isinstance(settings, Settings) else compose(settings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl settings``."""
    parser.add_argument(
        "--params", type=Path, default=PARAMS, help="the settings file (default params.yaml; e.g. profiles/paper.yaml)"
    )
    parser.add_argument(
        "--overlay", type=Path, action="append", default=[], help="a further overlay laid over it (repeatable)"
    )
    parser.add_argument(
        "--changed", action="store_true", help="only the settings that differ from the defaults (the paper's)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the resolved settings as YAML (``gvsl settings``)."""
    from gvsl.settings import leaves

    resolved = load_settings(args.params, args.overlay).to_mapping()
    if args.changed:
        defaults = leaves(Settings().to_mapping())
        resolved = {path: value for path, value in leaves(resolved).items() if defaults.get(path, ...) != value}
    print(yaml.safe_dump(resolved, sort_keys=False, width=110, default_flow_style=None), end="")
    return 0
