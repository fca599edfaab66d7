"""The prepare stage: one prepared dataset per ``params.prepare.tasks`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.pipeline.layout import BUILD, prepared_dir, setting


def prepare_stage(task: str, params: Mapping[str, Any], build: Path = BUILD, progress: bool = False) -> Path:
    """Prepare ``task`` as ``params.prepare.tasks.<task>`` says (a generated cohort or a real dataset)."""
    from gvsl.data.prepare import prepare_request
    from gvsl.data.sources import PrepareRequest

    settings = dict(setting(params, "prepare", "tasks", task))
    seed = int(setting(params, "prepare", "seed"))
    try:
        request = PrepareRequest.from_params(settings, task=task, seed=seed, progress=progress)
        return prepare_request(request, prepared_dir(task, build), overwrite=True)
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: prepare.tasks.{task}: {err}") from None
