"""Pipeline statistics used for /diagnostics."""

from __future__ import annotations

import threading

import pytest

from moge2_ros.ros.stats import PipelineStats


def test_rates_and_percentiles_over_window():
    s = PipelineStats(window_s=10.0)
    s._t0 = 0.0
    for i in range(100):  # 10 Hz input for 10 s
        s.on_received(now=i * 0.1)
    for i in range(50):  # 5 Hz output, latency 100..149 ms
        s.on_processed(latency_s=0.1 + i * 0.001, inference_s=0.05, now=i * 0.2)
    snap = s.snapshot(now=10.0)
    assert snap["input_rate_hz"] == pytest.approx(10.0)
    assert snap["output_rate_hz"] == pytest.approx(5.0)
    assert snap["latency_p50_ms"] == pytest.approx(124.5)
    assert 145 < snap["latency_p99_ms"] <= 149
    assert snap["inference_p50_ms"] == pytest.approx(50.0)
    assert snap["received"] == 100 and snap["processed"] == 50


def test_window_forgets_old_events_and_counts_failures():
    s = PipelineStats(window_s=2.0)
    s._t0 = 0.0
    s.on_received(now=0.0)
    s.on_received(now=9.5)
    s.on_dropped()
    s.on_failure("bad_input", "unsupported encoding 'yuv422'")
    snap = s.snapshot(now=10.0)
    assert snap["input_rate_hz"] == pytest.approx(0.5)
    assert snap["dropped"] == 1 and snap["bad_input"] == 1 and snap["received"] == 2
    assert snap["last_error"] == "unsupported encoding 'yuv422'"
    assert "latency_p50_ms" not in snap


def test_recent_failures_are_windowed():
    s = PipelineStats(window_s=2.0)
    s._t0 = 0.0
    s.on_failure("bad_input", "old", now=1.0)
    s.on_failure("errors", "new", now=9.0)
    snap = s.snapshot(now=10.0)
    assert snap["recent_failures"] == 1 and snap["bad_input"] == 1 and snap["errors"] == 1
    assert s.snapshot(now=20.0)["recent_failures"] == 0
    s.on_failure("bad_input", "camera_info: K is zero", now=20.0, frame=False)  # the frame itself was published
    assert s.snapshot(now=20.5)["recent_failures"] == 0 and s.counts["bad_input"] == 2


def test_thread_safe_counting():
    s = PipelineStats()

    def work():
        for _ in range(2000):
            s.on_received()
            s.on_dropped()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.counts["received"] == 8000 and s.counts["dropped"] == 8000


def test_unwatched_frames_are_counted_apart_from_drops_and_failures():
    s = PipelineStats()
    for _ in range(3):
        s.on_received()
    s.on_unwatched()
    s.on_dropped()
    s.on_processed(0.01, 0.005)
    snap = s.snapshot()
    assert (snap["received"], snap["processed"], snap["dropped"], snap["unwatched"]) == (3, 1, 1, 1)
    assert snap["recent_failures"] == 0  # not computing for nobody is not a failure
