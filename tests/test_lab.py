"""`make lab` starts JupyterLab on the project, with the environment's kernel that papermill uses."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_with_the_papermill_kernel(tmp_path):
    port = free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    token = "gvsl-test"
    lab = subprocess.Popen(
        ["make", "lab", f"LAB_ARGS=--no-browser --ip 127.0.0.1 --port {port} --IdentityProvider.token={token}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as r:
                    specs = json.load(r)
                break
            except OSError:
                assert lab.poll() is None, "make lab exited"
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}", timeout=5) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
            assert r.status == 200
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
    assert {"pretrain.ipynb", "transfer.ipynb", "report.ipynb", "explore.ipynb"} <= names
    # The notebooks name the python3 kernel, which starts `python` from PATH: `make lab`, like `make repro`
    # (which runs papermill), puts the environment's bin folder first, so both run the environment's Python.
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == "python"
    for target in ("lab", "repro"):
        dry_run = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert f'PATH="{ROOT / ".venv" / "bin"}:' in dry_run
    assert Path(sys.executable).parent == ROOT / ".venv" / "bin"
