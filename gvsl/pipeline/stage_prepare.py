"""The prepare stage: one prepared dataset per ``prepare.tasks`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Settings, as_settings
from gvsl.pipeline.layout import BUILD, prepared_dir


def prepare_stage(
    task: str, settings: Settings | Mapping[str, Any], build: Path = BUILD, progress: bool = False
) -> Path:
    """Prepare ``task`` as ``prepare.tasks.<task>`` says (a generated cohort or a real dataset)."""
    from gvsl.data.prepare import prepare_request

    request = as_settings(settings).prepare.request(task, progress=progress)
    try:
        return prepare_request(request, prepared_dir(task, build), overwrite=True)
    except GVSLInputError as err:
        raise GVSLInputError(f"params.yaml: prepare.tasks.{task}: {err}") from None
