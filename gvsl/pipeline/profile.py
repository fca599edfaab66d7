"""A profile's pipeline in a copy of the project: ``python -m gvsl.pipeline.profile PROFILE --data FOLDER``.

``make repro-paper`` runs the paper profile this way. The copy (``DEST/project``, default
``build/<profile>/project``) holds what a fresh clone holds with this checkout's edits; its
``params.yaml`` is the profile's resolved settings (every setting, over the paper's defaults), its
``data/`` is pointed at ``FOLDER`` with the README's commands (``dvc import-url``, ``dvc unfreeze``), and
``dvc repro`` runs there. So this project's ``params.yaml`` and committed ``results/`` stay as they are,
and the profile's results are in ``DEST/project/results``. Run again, it refreshes the copy's code and
settings from this checkout and runs ``dvc repro`` again: its data, ``dvc.lock`` and ``build/`` stay, so
finished runs are kept and interrupted ones resume. The rehearsal of the paper profile
(:mod:`gvsl.rehearsal`) runs through the same steps on stand-ins of its datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gvsl.errors import GVSLInputError
from gvsl.pipeline.config import Settings, load_settings

__all__ = [
    "MARKER",
    "README_DATA_COMMANDS",
    "claimed_folder",
    "copy_project",
    "fresh_folder",
    "run_command",
    "run_in_copy",
    "update_mark",
]

#: what the README tells a user of real data to run to point data/ at their datasets ({data}: that folder)
README_DATA_COMMANDS = (
    ("rm", "-rf", "data"),
    ("dvc", "import-url", "--force", "{data}", "data"),
    ("dvc", "unfreeze", "data.dvc"),
)
#: marks a folder this module made: the kind of run, its status, and the data folder its copy imported
MARKER = "gvsl-profile-run.json"
#: the marks of the same folders before this module: file name -> kind
_EARLIER_MARKERS = {"gvsl-rehearsal.json": "rehearsal"}


def _project_files(source: Path) -> list[str]:
    """What a fresh clone holds, with uncommitted edits (tracked, or untracked and not ignored), but
    ``results/``: the copy must make its own, not show the committed ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(
        name
        for name in set(listed.split("\0"))
        if name and not name.startswith("results/") and (source / name).is_file()
    )


def _tracked_files(folder: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=folder, check=True, capture_output=True, text=True).stdout
    return [name for name in listed.split("\0") if name]


def copy_project(
    source: Path, dest: Path, settings: Settings | Mapping[str, Any] | None = None, keep: Sequence[str] = ()
) -> Path:
    """A committed git copy of the project at ``source``, with ``settings`` as its params.yaml if given:
    :class:`Settings` resolved (every setting), a mapping as it is (an overlay of the defaults).

    Into an earlier copy, the files ``keep`` names stay as they are there. Committed, because DVCLive refuses
    a repository without commits, as a fresh clone never is.
    """
    listed = _project_files(source)
    if (dest / ".git").is_dir():  # an earlier copy: what the project no longer holds goes
        for name in set(_tracked_files(dest)) - set(listed) - set(keep) - {"params.yaml"}:
            if not name.startswith("results/"):
                (dest / name).unlink(missing_ok=True)
    for name in listed:
        if name not in keep:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    if settings is not None:
        values = settings.to_mapping() if isinstance(settings, Settings) else dict(settings)
        (dest / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    commands = [["add", "-A"], ["commit", "-qm", "a copy of the project", "--allow-empty"]]
    for command in commands if (dest / ".git").is_dir() else [["init", "-q"], *commands]:
        subprocess.run(
            ["git", "-c", "user.name=gvsl", "-c", "user.email=gvsl@localhost", *command], cwd=dest, check=True
        )
    return dest


def run_command(command: Sequence[str], cwd: Path) -> None:
    """Run ``command`` in ``cwd``; a failure is a :class:`GVSLInputError` naming it."""
    # dvc and the stages' `python -m gvsl.stage` come from the environment running this
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    print("$", " ".join(command), flush=True)
    # its own process group: if this process is stopped, dvc's stages (grandchildren) go with it
    process = subprocess.Popen(list(command), cwd=cwd, env=env, start_new_session=True)
    try:
        returncode = process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if returncode:
        raise GVSLInputError(f"`{' '.join(command)}` failed with exit status {returncode} (in {cwd})")


def _mark(dest: Path) -> dict[str, Any] | None:
    """What the mark of ``dest`` says (None: no mark, not a folder of this module's)."""
    if (dest / MARKER).is_file():
        try:
            return dict(json.loads((dest / MARKER).read_text()))
        except ValueError:
            return {"kind": "unreadable"}
    for name, kind in _EARLIER_MARKERS.items():
        if (dest / name).is_file():
            return {"kind": kind}
    return None


def update_mark(dest: Path, **fields: Any) -> None:
    """Add ``fields`` to the mark of ``dest``."""
    (dest / MARKER).write_text(json.dumps({**(_mark(dest) or {}), **fields}, indent=2) + "\n")


def claimed_folder(dest: Path, kind: str) -> Path:
    """``dest``, made and marked as a ``kind`` run of this module's (``profile`` or ``rehearsal``) if new;
    refused if it exists without the mark, or with another kind's."""
    dest = Path(dest).resolve()
    mark = _mark(dest)
    if dest.exists() and mark is None:
        raise GVSLInputError(f"{dest}: exists and was not made by an earlier profile run; choose another --dest")
    if mark is not None and mark.get("kind") != kind:
        raise GVSLInputError(f"{dest}: holds a {mark.get('kind')} run, not a {kind} one; choose another --dest")
    dest.mkdir(parents=True, exist_ok=True)
    update_mark(dest, kind=kind, status="running")
    return dest


def fresh_folder(dest: Path, kind: str) -> Path:
    """``dest``, emptied if an earlier ``kind`` run of this module made it; refused otherwise."""
    dest = claimed_folder(dest, kind)
    shutil.rmtree(dest)
    return claimed_folder(dest, kind)


#: what an earlier copy keeps when it is refreshed: its data import, its DVC configuration and DVC's record of
#: what it ran (and its build/ and results/, which the project does not list)
KEPT_IN_A_COPY = ("data.dvc", "dvc.lock", ".dvc/config")


def run_in_copy(source: Path, dest: Path, settings: Settings, data: Path) -> Path:
    """Copy the project at ``source`` into ``dest/project`` with ``settings``, point its ``data/`` at ``data``
    and run ``dvc repro`` there; returns the copy.

    An earlier copy there gets this checkout's code and the ``settings``, and keeps its DVC state
    (:data:`KEPT_IN_A_COPY`, ``build/``); its data is imported again only if ``data`` is another folder than
    the one it imported, or if that import did not finish.
    """
    data = Path(data).resolve()
    if not data.is_dir():
        raise GVSLInputError(f"{data}: no such folder of datasets")
    project = Path(dest) / "project"
    refresh = (project / ".git").is_dir()
    copy_project(source, project, settings, keep=KEPT_IN_A_COPY if refresh else ())
    mark = _mark(Path(dest)) or {}
    if not refresh or mark.get("data") != str(data) or not mark.get("imported"):
        update_mark(Path(dest), data=str(data), imported=False)
        for command in README_DATA_COMMANDS:
            run_command([part.format(data=data) for part in command], project)
        update_mark(Path(dest), imported=True)
    run_command(["dvc", "repro"], project)
    return project


def main(argv: list[str] | None = None) -> int:
    from gvsl.pipeline.layout import find_project

    parser = argparse.ArgumentParser(prog="python -m gvsl.pipeline.profile", description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="the profile's settings file, e.g. profiles/paper.yaml")
    parser.add_argument("--data", required=True, help="the folder of the profile's datasets (data/…)")
    parser.add_argument("--dest", type=Path, help="where the copy goes (default: build/<profile's name>)")
    args = parser.parse_args(argv)
    try:
        if not args.data.strip():
            raise GVSLInputError("--data: name the folder of the datasets")
        source = find_project()
        settings = load_settings(args.profile)
        dest = claimed_folder(args.dest or source / "build" / settings.profile, "profile")
        project = run_in_copy(source, dest, settings, Path(args.data))
    except GVSLInputError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    update_mark(dest, status="passed")
    print(f"{parser.prog}: the {settings.profile} profile's results are in {project / 'results'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
