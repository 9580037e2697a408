"""bench/gpu_check.sh without a GPU: its argument handling, the one-line skip on a machine without CUDA (what CI
runs), and — with a stand-in interpreter that claims a CUDA device and records what it is asked to run — that
every step runs the intended command and lands in summary.txt.  The GPU numbers themselves need a GPU."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from _paths import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_help_and_bad_arguments():
    shown = run("--help")
    assert shown.returncode == 0 and "--require-gpu" in shown.stdout and "--steps LIST" in shown.stdout
    bad = run("--frobnicate")
    assert bad.returncode == 2 and "unknown argument '--frobnicate'" in bad.stderr
    steps = run("--steps", "tests,nodes")
    assert steps.returncode == 2 and "unknown step 'nodes'" in steps.stderr
    assert run("--out").returncode == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the script would measure")
def test_without_a_gpu_it_skips_in_one_line(tmp_path):
    out = tmp_path / "out"
    result = run("--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("[gpu_check] no CUDA device visible to")
    assert result.stdout.strip().endswith("nothing to measure, skipped") and len(result.stdout.splitlines()) == 1
    assert not out.exists()
    assert run("--out", str(out), "--require-gpu").returncode == 3


FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in interpreter: a CUDA device "exists"; every other call is recorded and succeeds.
echo "$*" >> "$FAKE_LOG"
case "$*" in
  *"import rclpy"*) exit 1 ;;
  *onnxruntime*) echo "ort-cuda" ;;
  *get_device_properties*) echo "torch 9.9 CUDA 13.0: Fake GPU, 80.0 GiB, 132 SMs" ;;
  *"-m pytest"*) echo "7 passed" ;;
  *bench_backends.py*) echo "| table |" ;;
esac
exit 0
"""


def test_with_a_gpu_every_step_runs_its_command(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.txt"
    out = tmp_path / "out"
    result = run("--python", str(fake), "--out", str(out), env={"FAKE_LOG": str(log), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text()
    assert "-m pytest -q -m gpu" in calls and "test/inference/test_predictor.py" in calls
    assert "bench/bench_backends.py --device cuda" in calls and "--models vits vitb vitl" in calls
    assert "--tokens 1200 2400 3600" in calls and "--variants eager --precisions fp32 fp16 bf16" in calls
    assert "--variants compiled cuda-graphs --precisions fp16" in calls
    assert "--variants ort-cuda --precisions fp32 fp16" in calls
    summary = (out / "summary.txt").read_text()
    assert "device: torch 9.9 CUDA 13.0: Fake GPU" in summary
    for step in ("tests marked gpu: done", "backends eager", "backends compiled + CUDA graphs", "backends ONNX Runtime"):
        assert step in summary, summary
    assert "node end to end: skipped (rclpy is not importable" in summary
    assert (out / "gpu_tests.txt").read_text().strip() == "7 passed"
