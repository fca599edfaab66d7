"""What produced a result: the package versions and device, digests of the code and of input files, the git
commit, and which recorded inputs of an earlier run differ from this one's (:func:`changed_inputs`, the one
rule by which pre-training resumes or restarts and a transfer run is kept or trained again)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["changed_inputs", "code_digest", "environment", "files_digest", "git_commit"]


def changed_inputs(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys whose recorded value in ``saved`` differs from ``current`` (present in one only included), in
    ``current``'s order: empty when an earlier run was made from exactly these inputs."""
    return [
        key
        for key in dict.fromkeys([*current, *saved])
        if key not in saved or key not in current or saved[key] != current[key]
    ]


def environment(device: str | torch.device = "cpu") -> dict[str, str]:
    """The versions that produced a result (Python, torch, MONAI, NumPy) and the device it ran on."""
    import platform

    import monai
    import numpy

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
        "numpy": str(numpy.__version__),
        "device": f"{device} ({name})",
    }


def code_digest() -> str:
    """A digest of the ``gvsl`` package's source files: the code a run was made with, committed or not."""
    return files_digest(Path(__file__).resolve().parent, "*.py")


def files_digest(folder: str | os.PathLike, pattern: str = "*") -> str:
    """A digest of every file under ``folder`` matching ``pattern``, with its relative path: which inputs a run read."""
    folder = Path(folder)
    hasher = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in folder.rglob(pattern) if p.is_file()):
        hasher.update(str(file.relative_to(folder)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


#: tracked files the pipeline itself rewrites while it runs; changes to them do not make the code dirty
_PIPELINE_OUTPUTS = (":(top,exclude)dvc.lock", ":(top,exclude)results")


def git_commit(path: str | os.PathLike = ".") -> str:
    """The commit checked out at ``path`` (with ``+dirty`` for uncommitted changes), or ``unknown``.

    ``dvc.lock`` and ``results/`` are left out of the check: ``dvc repro`` rewrites them as its
    stages finish, so a fresh clone's run would otherwise always call itself dirty.
    """
    try:
        cwd = Path(path).resolve()
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *_PIPELINE_OUTPUTS],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
