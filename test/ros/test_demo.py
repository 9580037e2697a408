"""``moge2-ros demo`` (:mod:`moge2_ros.ros.run_demo`, :mod:`moge2_ros.ros.demo_camera`): the monitor's numbers,
its "waiting for" messages, and one short run of the whole graph.

The end-to-end run asserts order and presence (it waited, then data flowed, then a summary with the node's
counters), never a speed: it must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest

from moge2_ros.ros.run_demo import DemoMonitor, Stream, _is_bundled, node_threads, waiting_for
from ros_helpers import STARTUP_TIMEOUT_S, ros_env

pytestmark = pytest.mark.ros


def _stream(times: list[float], latency: float = 0.1) -> Stream:
    s = Stream()
    for t in times:
        s.add(t, t - latency)
    return s


def test_rate_is_the_recent_rate() -> None:
    """5 Hz for 10 s reads 5 Hz; the same stream 3 s after it stopped reads a falling rate, 5 s after it 0."""
    s = _stream([100.0 + 0.2 * i for i in range(50)])  # 100.0 .. 109.8
    assert s.rate(109.9, window_s=4.0) == pytest.approx(5.0, abs=0.3)
    assert s.rate(113.0, window_s=4.0) < 2.0
    assert s.rate(115.0, window_s=4.0) == 0.0
    assert s.count == 50


def test_a_burst_does_not_read_as_a_high_rate() -> None:
    """The old monitor read 3 messages within 0.1 s as ~20 Hz; over the time since the first they are ~1 Hz."""
    s = _stream([10.0, 10.05, 10.1])
    assert s.rate(12.0, window_s=4.0) == pytest.approx(1.0)
    assert _stream([10.0]).rate(12.0) == 0.0
    assert Stream().rate(12.0) == 0.0


def test_latency_is_receipt_minus_stamp_over_the_window() -> None:
    s = _stream([1.0, 2.0, 3.0], latency=0.25)
    assert s.latencies(3.5, window_s=2.0).tolist() == pytest.approx([0.25, 0.25])


def test_waiting_for_says_what_is_missing() -> None:
    assert waiting_for(False, False) == "demo_camera's first image and moge2_node to load the model"
    assert waiting_for(True, False) == "moge2_node to load the model"
    assert waiting_for(False, True) == "demo_camera's first image"
    assert "first depth image" in waiting_for(True, True)


def test_node_threads_leave_one_cpu_unless_set() -> None:
    assert node_threads({}, cpus=2)["OMP_NUM_THREADS"] == "1"
    assert node_threads({}, cpus=1)["OMP_NUM_THREADS"] == "1"
    assert node_threads({}, cpus=16)["OMP_NUM_THREADS"] == "15"
    assert node_threads({"OMP_NUM_THREADS": "4"}, cpus=2)["OMP_NUM_THREADS"] == "4"


def test_scale_report_splits_the_error_into_scale_and_shape_since_the_start(tmp_path: Path) -> None:
    # (receipt, median gt / predicted, AbsRel after that per-frame scale); the first entry is before the start
    monitor = SimpleNamespace(scale_split=deque([(0.5, 9.0, 0.9), (1.0, 1.7, 0.2), (2.0, 1.8, 0.22),
                                                 (3.0, 1.6, 0.18)]))
    line = DemoMonitor.scale_report(monitor, 1.0)
    assert "median ground truth / predicted 1.70" in line and "AbsRel 0.200 once each frame's scale" in line
    assert "bundled demo model" not in line
    assert "bundled demo model gets the shape" in DemoMonitor.scale_report(monitor, 1.0, bundled_model=True)
    assert DemoMonitor.scale_report(monitor, 5.0) == ""
    from moge2_ros.assets import demo_model_path

    assert _is_bundled(str(demo_model_path())) and not _is_bundled(str(tmp_path / "model.pt"))


def test_camera_counts_add_up_per_camera() -> None:
    status = {"left": {"received": "36", "processed": "29", "dropped": "2", "unwatched": "5", "latency_p50_ms": "91.9"},
              "right": {"received": "35", "processed": "34", "dropped": "1", "unwatched": "0", "latency_p50_ms": "93.7"}}
    line = DemoMonitor.camera_counts(SimpleNamespace(camera_status=status))
    assert line == ("left: 36 received, 29 processed, 2 dropped, 5 with no subscriber, latency p50 91.9 ms; "
                    "right: 35 received, 34 processed, 1 dropped, latency p50 93.7 ms")


@pytest.mark.slow
def test_demo_waits_then_measures_from_the_first_depth_image(tmp_path: Path, tiny_model_path: Path) -> None:
    """A short real run (small frames, the tiny model): "waiting for" lines, then "data flowing", then at least
    one report line and the summary with the node's own counters, in that order; exit status 0."""
    env = ros_env(tmp_path)
    argv = [sys.executable, "-m", "moge2_ros", "demo", "--model", str(tiny_model_path), "--duration", "3",
            "--width", "160", "--height", "120", "--num-tokens", "100", "--log-dir", str(tmp_path / "logs"),
            "--startup-timeout", str(STARTUP_TIMEOUT_S)]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S + 60)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    lines = [line for line in out.splitlines() if line.startswith("[demo]")]
    kinds = [next((k for k in ("waiting for", "data flowing", "t=", "summary", "moge2_node:") if k in line), "")
             for line in lines]
    order = [k for i, k in enumerate(kinds) if k and (i == 0 or k != kinds[i - 1])]
    assert order[:5] == ["waiting for", "data flowing", "t=", "summary", "moge2_node:"], out
    assert re.search(r"summary over \d+ s: camera +\d+\.\d Hz \| depth +\d+\.\d Hz", out), out
    assert re.search(r"moge2_node: \d+ frames received, [1-9]\d* processed", out), out
    assert re.search(r"depth scale: median ground truth / predicted \d+\.\d\d .*AbsRel \d\.\d{3} once", out), out
