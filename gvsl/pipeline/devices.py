"""Which devices a stage's independent jobs go to: ``<group>.devices`` (:class:`~gvsl.pipeline.config.Workers`).

``auto`` is every visible CUDA device, or, without CUDA, ``<group>.processes`` CPU workers; a list names
them (``[cuda:0, cuda:1]``; ``cpu`` may repeat: each entry is one worker at one thread). Each device runs
one job at a time (:func:`gvsl.pipeline.workers.on_devices`).
"""

from __future__ import annotations

from typing import Any

import torch

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Workers

__all__ = ["stage_devices"]


def stage_devices(workers: Workers, group: str) -> list[str]:
    """``<group>.devices`` (``workers``) as a list of device names, one worker each."""
    from gvsl.pipeline.workers import available_cores

    value = workers.devices
    if value == "auto":
        if torch.cuda.is_available():
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
        return ["cpu"] * (available_cores() if workers.processes == "auto" else workers.processes)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = "auto, or a list of cpu" + (f", cuda:0 … cuda:{visible - 1}" if visible else " (no CUDA device is visible)")
    if not isinstance(value, (list, tuple)) or not value:
        raise GVSLInputError(f"params.yaml: {group}.devices must be {valid}; got {value!r}")
    devices = []
    for name in value:
        device = _device(name)
        if device is None or (device.type == "cuda" and (device.index or 0) >= visible):
            raise GVSLInputError(f"params.yaml: {group}.devices: {name!r} is not a visible device; valid: {valid}")
        devices.append("cpu" if device.type == "cpu" else f"cuda:{device.index or 0}")
    repeated = sorted({d for d in devices if d != "cpu" and devices.count(d) > 1})
    if repeated:
        raise GVSLInputError(f"params.yaml: {group}.devices repeats {repeated}: a GPU runs one job at a time")
    return devices


def _device(name: Any) -> torch.device | None:
    if not isinstance(name, str):
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        return None
    return device if device.type in ("cpu", "cuda") and (device.type == "cuda" or device.index is None) else None
