"""Run one pipeline stage's notebook: ``python -m gvsl.stage NOTEBOOK OUTPUT [-p NAME VALUE]…``.

The stage's settings are ``params.yaml`` (every group, as papermill's ``-f params.yaml`` injects them)
plus the ``-p`` values, which are strings (the stage's task or method). The notebook runs on the
environment's Python kernel, as papermill's command line would run it, with two differences:

* the kernel is reached over IPC sockets in a private temporary folder rather than over TCP on
  localhost, so it has no open port and does not print ipykernel's warning about unencrypted TCP
  at every stage;
* papermill's own progress bar and log stay off; the stage's progress lines
  (:func:`gvsl.runtime.progress_line`) reach the terminal.

A failing cell ends the command with the cell's traceback and exit status 1; the executed notebook
is still written, up to the failing cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["main", "run_stage"]


def _kernel_manager_class(socket_folder: str):
    # imported here: `python -m gvsl.stage` should not pay for jupyter_client until it runs a notebook
    from jupyter_client.manager import KernelManager
    from traitlets import default

    class IPCKernelManager(KernelManager):
        """A kernel manager whose kernels listen on IPC sockets under ``socket_folder``."""

        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return os.path.join(socket_folder, "kernel")

    return IPCKernelManager


def run_stage(notebook: str | Path, output: str | Path, params: Mapping[str, Any],
              overrides: Mapping[str, str] | None = None) -> None:
    """Execute ``notebook`` into ``output`` with ``params`` (and ``overrides``) as its parameters."""
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gvsl-kernel-") as sockets:
        papermill.execute_notebook(str(notebook), str(output), parameters={**params, **(overrides or {})},
                                   progress_bar=False, kernel_manager_class=_kernel_manager_class(sockets))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gvsl.stage", description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a string parameter after params.yaml's groups (repeatable)")
    parser.add_argument("-f", "--parameters-file", default="params.yaml",
                        help="YAML file of parameters (default: params.yaml)")
    args = parser.parse_args(argv)
    import yaml

    path = Path(args.parameters_file)
    if not path.is_file():
        print(f"gvsl.stage: error: no parameters file {path}", file=sys.stderr)
        return 2
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        print(f"gvsl.stage: error: {path} must hold a mapping of settings", file=sys.stderr)
        return 2
    from papermill.exceptions import PapermillExecutionError

    try:
        run_stage(args.notebook, args.output, params, dict(args.parameter))
    except PapermillExecutionError as err:
        # papermill's message carries the cell's traceback; the executed notebook is kept for a look
        print(f"gvsl.stage: {args.notebook} failed (executed notebook: {args.output})\n{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
