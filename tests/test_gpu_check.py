"""make gpu-check (issue 23, item 5): a clean skip without CUDA, and its table's code path on the CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the check itself")
def test_skips_cleanly_without_cuda():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped: no CUDA device")


def test_table_on_the_cpu_at_a_tiny_size(capsys):
    assert (
        _module().main(
            ["--device", "cpu", "--size", "16", "--quick", "--steps", "1", "--channels", "8,16,32,64,128,64,32,16,8"]
        )
        == 0
    )
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    checks = [line.split("|")[1].strip() for line in table]
    assert checks.count("pretrain 16³") == 5 and "transfer fine-tune 16³" in checks
    assert "DDP gloo world 1" in checks and "engine bf16 steps" in checks
    compiled = next(line for line in table if "| yes |" in line)
    assert "skipped" in compiled  # torch.compile runs on CUDA only
    measured = [line for line in table if "skipped" not in line]
    assert all(line.split("|")[5].strip() not in ("-", "") for line in measured)  # every measured row has s/step
    assert "FAILED" not in out and "all finite: yes" in out
