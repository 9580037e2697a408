"""The demo with two demo cameras into one moge2_node (issue 16; ``run_demo(cameras=2)``): both cameras' frames are
processed by the one node, counted per camera in its /diagnostics, and the run ends with status 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ros_helpers import STARTUP_TIMEOUT_S, ros_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_two_demo_cameras_into_one_node(tmp_path: Path, tiny_model_path: Path) -> None:
    env = ros_env(tmp_path)
    code = ("import sys; from moge2_ros.ros.run_demo import run_demo; "
            f"sys.exit(run_demo({str(tiny_model_path)!r}, duration=4.0, width=160, height=120, cameras=2, "
            f"extra_params=['-p', 'num_tokens:=100'], log_dir={str(tmp_path / 'logs')!r}, "
            f"startup_timeout={STARTUP_TIMEOUT_S}))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=STARTUP_TIMEOUT_S + 60)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "one moge2_node (/camera/moge2_node) serves both cameras" in out, out
    assert "/camera/left/depth/image" in out and "/camera/right/depth/image" in out, out
    assert re.search(r"summary over \d+ s: camera +\d+\.\d Hz \| depth +\d+\.\d Hz", out), out
    counts = re.search(r"per camera: left: (\d+) received, (\d+) processed.*; right: (\d+) received, (\d+) processed",
                       out)
    assert counts, out
    assert int(counts.group(2)) > 0 and int(counts.group(4)) > 0, counts.group(0)
    assert re.search(r"/camera/right/depth/image: [1-9]\d* depth images received", out), out


def test_the_demo_takes_one_or_two_cameras(tmp_path: Path) -> None:
    from moge2_ros.ros.run_demo import run_demo

    assert run_demo("unused", cameras=3, log_dir=tmp_path) == 2
