"""``gvsl transfer``: one transfer experiment, from a prepared dataset folder to ``metrics.json``, ``model.pt``,
``dvclive/``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from gvsl.errors import GVSLInputError
from gvsl.methods import SCRATCH
from gvsl.nets.unet import PAPER_CHANNELS, UNet3D, parse_channels
from gvsl.settings import add_flags, from_flags
from gvsl.transfer.cases import label_subset
from gvsl.transfer.config import METRIC_NAMES, TransferConfig, num_outputs
from gvsl.transfer.train import TransferResult, run_transfer

__all__ = ["add_arguments", "run", "transfer_prepared"]


def transfer_prepared(
    data: str | Path,
    out: str | Path,
    init: str,
    config: TransferConfig,
    channels: Sequence[int] = PAPER_CHANNELS,
    progress: bool = True,
) -> TransferResult:
    """Run one transfer experiment on a prepared dataset and write ``out/metrics.json``, ``out/model.pt``,
    ``out/dvclive/``.

    Args:
        data: prepared dataset folder (task SHC, SAC, CCC or SBM).
        out: output folder.
        init: ``scratch`` (a fresh U-Net of ``channels``, seeded by ``config.seed``) or a path to
            our ``backbone.pt``, our model checkpoint, or the authors' released weights.
        config: run settings; ``task`` and ``num_classes`` must agree with the dataset.
    """
    from gvsl.checkpoint import atomic_save, load_backbone
    from gvsl.data import load_prepared
    from gvsl.provenance import environment, git_commit
    from gvsl.runtime import resolve_device

    dataset = load_prepared(data, task=("SHC", "SAC", "CCC", "SBM"))
    info = dataset.info
    num_classes = num_outputs(info.task_type, info.classes)
    if config.task != info.task_type or config.num_classes != num_classes:
        raise GVSLInputError(
            f"{data}: dataset {info.task} is {info.task_type} with {num_classes} output(s); "
            f"the run asks for {config.task} with {config.num_classes}"
        )
    if init == SCRATCH:
        torch.manual_seed(config.seed)
        backbone = UNet3D(1, channels)
    else:
        backbone = load_backbone(init)
    splits = {name: dataset.load_split(name) for name in ("train", "val", "test")}
    splits["train"] = label_subset(splits["train"], config.label_fraction, config.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    class_names = ["background", *info.classes] if info.task_type == "segmentation" else None
    result = run_transfer(
        backbone,
        splits["train"],
        splits["val"],
        splits["test"],
        config,
        log_dir=out / "dvclive",
        class_names=class_names,
        progress=progress,
    )
    summary = {
        "task": info.task,
        "protocol": config.protocol,
        "init": init,
        "metric": result.metric_name,
        "best_iteration": result.best_iteration,
        "best_val": result.best_val_metric,
        "test": result.test,
        "val_curve": [[int(i), float(v)] for i, v in result.val_curve],
        "iterations": result.iterations,
        "converged": result.converged,
        "plateau": {
            "window": config.plateau_window,
            "min_delta": config.plateau_delta,
            "needs_rise": config.plateau_needs_rise,
            "min_iterations": config.min_iterations,
            "stop_on_plateau": config.stop_on_plateau,
        },
        "per_case": result.test_cases,
        "train_cases": [case.id for case in splits["train"]],
        "seconds": result.seconds,
        "environment": environment(resolve_device(config.device)),
        "seconds_per_iteration": result.seconds_per_iteration,
        "config": config.to_dict(),
        "backbone_channels": list(backbone.channels),
        "dataset": str(data),
        "dataset_source": info.source,
        "commit": git_commit(),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    atomic_save(
        {
            "format": "gvsl-kit/transfer-model/1",
            "config": config.to_dict(),
            "backbone_channels": list(backbone.channels),
            "state_dict": result.model.state_dict(),
        },
        out / "model.pt",
    )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gvsl transfer``: one per setting of :class:`~gvsl.transfer.config.TransferConfig` but those
    the dataset sets (task, classes), and the data, the output and the initialisation."""
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset (task SHC, SAC, CCC or SBM)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--init", default=SCRATCH, help="scratch, or a backbone.pt / checkpoint / authors' weights")
    parser.add_argument(
        "--channels",
        default=",".join(map(str, PAPER_CHANNELS)),
        help="nine comma-separated backbone widths, for --init scratch (default: the paper's)",
    )
    add_flags(parser, TransferConfig, skip=("task", "num_classes"))


def run(args: argparse.Namespace) -> int:
    from gvsl.data import load_prepared

    info = load_prepared(args.data).info
    if info.task_type not in METRIC_NAMES:
        raise GVSLInputError(f"{args.data}: dataset task {info.task} has no transfer protocol")
    num_classes = num_outputs(info.task_type, info.classes)
    config = from_flags(TransferConfig, args, task=info.task_type, num_classes=num_classes)
    result = transfer_prepared(args.data, args.out, args.init, config, channels=parse_channels(args.channels))
    print(
        f"{info.task} {args.protocol} test {result.metric_name} = "
        f"{result.test.get(result.metric_name, float('nan')):.4f} (best iteration {result.best_iteration})"
    )
    return 0
