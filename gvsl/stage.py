"""Run one pipeline stage's notebook: ``python -m gvsl.stage NOTEBOOK OUTPUT [-p NAME VALUE]…``.

The stage's settings are ``params.yaml`` laid over the paper's defaults (:mod:`gvsl.pipeline.config`),
checked, and injected whole as the notebook's ``settings`` parameter, plus the ``-p`` values, which are
strings (the stage's task or method). The notebook runs on the
environment's Python kernel, as papermill's command line would run it, with two differences:

* the kernel is reached over IPC sockets in a private temporary folder rather than over TCP on
  localhost, so it has no open port and does not print ipykernel's warning about unencrypted TCP
  at every stage;
* papermill's own progress bar and its log below errors stay off; the stage's progress lines
  (:func:`gvsl.runtime.progress_line`) reach the terminal.

A failing cell ends the command with the cell's traceback and exit status 1; the executed notebook
is still written, up to the failing cell. An interrupted stage (Ctrl-C or SIGTERM: exit status 128 +
the signal; or the runner killed) takes its kernel and the kernel's worker processes with it: jupyter_client starts
kernels in a session of
their own, out of reach of the terminal's Ctrl-C, and a kernel left behind would go on training and
writing the stage's outputs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["die_with_parent", "main", "run_stage"]

#: the kernel runs this first: it ends when the runner does, however the runner ends
_KERNEL_START = "--IPKernelApp.exec_lines=import gvsl.stage; gvsl.stage.die_with_parent()"


def die_with_parent() -> None:
    """Have Linux kill this process when its parent process ends (elsewhere, do nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _kernel_manager_class(socket_folder: str, started: list):
    # imported here: `python -m gvsl.stage` should not pay for jupyter_client until it runs a notebook
    from jupyter_client.manager import KernelManager
    from traitlets import default

    class IPCKernelManager(KernelManager):
        """A kernel manager whose kernels listen on IPC sockets under ``socket_folder``, listed in ``started``."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return os.path.join(socket_folder, "kernel")

    return IPCKernelManager


def run_stage(
    notebook: str | Path, output: str | Path, params: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> None:
    """Execute ``notebook`` into ``output`` with ``params`` (and ``overrides``) as its parameters."""
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    started: list = []

    def interrupt(signum, frame):
        # At once, and for good: papermill would notice a Ctrl-C only once the running cell had
        # finished, and then wait on the dead kernel. The executed notebook is not written.
        _kill_kernels(started)
        print(
            f"gvsl.stage: {notebook} interrupted ({signal.Signals(signum).name}); its kernel was stopped",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signum)

    handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    with tempfile.TemporaryDirectory(prefix="gvsl-kernel-") as sockets:
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters={**params, **(overrides or {})},
                progress_bar=False,
                kernel_manager_class=_kernel_manager_class(sockets, started),
                extra_arguments=[_KERNEL_START],
            )
        except BaseException:
            _kill_kernels(started)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _kill_kernels(managers: list) -> None:
    """Kill each started kernel's process group, which holds its worker processes too."""
    for manager in managers:
        pgid = getattr(manager.provisioner, "pgid", None)
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gvsl.stage", description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a string parameter after params.yaml's groups (repeatable)",
    )
    parser.add_argument(
        "-f",
        "--parameters-file",
        default="params.yaml",
        help="the settings, over the paper's defaults (default: params.yaml)",
    )
    args = parser.parse_args(argv)
    import logging

    # as papermill's --log-level ERROR: it would warn of every params.yaml group the notebook does not use
    logging.getLogger("papermill").setLevel(logging.ERROR)

    from gvsl.errors import GVSLInputError
    from gvsl.pipeline.config import load_settings

    try:
        settings = load_settings(args.parameters_file)
    except GVSLInputError as err:
        print(f"gvsl.stage: error: {err}", file=sys.stderr)
        return 2
    params = {"settings": settings.to_mapping()}
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
