"""FrameScheduler: latest-frame slots of several cameras, oldest first, batching by group, rate cap, drops."""

from __future__ import annotations

import threading
import time

import pytest

from moge2_ros.errors import InputError
from moge2_ros.pipeline.scheduler import FrameScheduler


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_newest_frame_per_camera_replaces_the_waiting_one_and_counts_a_drop() -> None:
    s = FrameScheduler(["front", "left"], clock=FakeClock())
    assert s.put("front", "f1") is False
    assert s.put("front", "f2") is True
    assert s.put("left", "l1") is False
    assert s.drops() == {"front": 1, "left": 0}
    got = s.take(timeout=0)
    assert [(w.camera, w.item) for w in got] == [("front", "f2")]


def test_round_robin_no_camera_starves_when_all_send_faster_than_the_worker() -> None:
    clock = FakeClock()
    s = FrameScheduler(["a", "b", "c"], clock=clock)
    served: list[str] = []
    for i in range(9):  # every camera sends a new frame before every take, always in the order a, b, c
        for name in "abc":
            clock.t += 0.01
            s.put(name, f"{name}{i}")
        served += [w.camera for w in s.take(timeout=0)]
    assert served == ["a", "b", "c"] * 3  # oldest-frame-first alone would serve "a" every time
    # 9 frames each, 3 served each; a's and b's newest still wait, c's newest was just served
    assert s.drops() == {"a": 5, "b": 5, "c": 6}
    assert s.waiting() == ["a", "b"]


def test_first_come_first_served_among_cameras_not_served_yet() -> None:
    clock = FakeClock()
    s = FrameScheduler(["a", "b", "c"], clock=clock)
    s.put("c", "c0", received=1.0)
    s.put("b", "b0", received=2.0)
    assert s.waiting() == ["c", "b"]
    assert [w.camera for w in s.take(timeout=0)] == ["c"]
    s.put("c", "c1", received=3.0)
    s.put("a", "a0", received=4.0)
    assert [w.camera for w in s.take(timeout=0)] == ["b"]  # served never: b (older) and a before c
    assert [w.camera for w in s.take(timeout=0)] == ["a"]
    assert [w.camera for w in s.take(timeout=0)] == ["c"]


def test_a_silent_camera_never_blocks_the_others() -> None:
    s = FrameScheduler(["silent", "busy"])
    s.put("busy", "x")
    start = time.monotonic()
    got = s.take(timeout=5.0)
    assert [w.camera for w in got] == ["busy"]
    assert time.monotonic() - start < 1.0


def test_batch_takes_every_waiting_frame_of_the_oldest_frames_group() -> None:
    clock = FakeClock()
    s = FrameScheduler(["a", "b", "c", "d"], clock=clock)
    s.put("a", 1, received=1.0, group=(72, 96, 108))
    s.put("b", 2, received=2.0, group=(48, 64, 108))
    s.put("c", 3, received=3.0, group=(72, 96, 108))
    s.put("d", 4, received=4.0, group=None)
    got = s.take(batch=True, timeout=0)
    assert [w.camera for w in got] == ["a", "c"]
    assert [w.camera for w in s.take(batch=True, timeout=0)] == ["b"]
    assert [w.camera for w in s.take(batch=True, timeout=0)] == ["d"]
    assert s.take(batch=True, timeout=0) == []


def test_batch_off_or_ungrouped_frames_run_one_at_a_time_and_max_batch_limits() -> None:
    s = FrameScheduler(["a", "b", "c"], clock=FakeClock())
    for i, name in enumerate("abc"):
        s.put(name, i, received=float(i), group="same")
    assert [w.camera for w in s.take(batch=False, timeout=0)] == ["a"]
    assert [w.camera for w in s.take(batch=True, max_batch=1, timeout=0)] == ["b"]
    s.put("a", 9, received=5.0, group="same")
    assert [w.camera for w in s.take(batch=True, max_batch=8, timeout=0)] == ["c", "a"]
    with pytest.raises(InputError, match="max_batch"):
        s.take(max_batch=0)


def test_rate_cap_holds_the_worker_and_newer_frames_replace_the_waiting_one() -> None:
    s = FrameScheduler(["a"], max_rate_hz=5.0)
    s.put("a", 0)
    assert [w.item for w in s.take(timeout=1.0)] == [0]
    start = time.monotonic()
    s.put("a", 1)
    s.put("a", 2)  # replaces 1 while the cap holds the worker
    got = s.take(timeout=2.0)
    waited = time.monotonic() - start
    assert [w.item for w in got] == [2]
    assert 0.15 < waited < 1.0, waited  # 1 / 5 Hz = 0.2 s after the previous start
    assert s.drops() == {"a": 1}


def test_rate_cap_counts_a_batch_of_n_as_n_frames() -> None:
    s = FrameScheduler(["a", "b"], max_rate_hz=10.0)
    s.put("a", 0, group=1)
    s.put("b", 0, group=1)
    start = time.monotonic()
    assert len(s.take(batch=True, timeout=1.0)) == 2
    s.put("a", 1, group=1)
    assert len(s.take(batch=True, timeout=2.0)) == 1
    assert time.monotonic() - start > 0.17  # 2 frames / 10 Hz


def test_stop_wakes_a_waiting_worker_and_discard_counts_drops() -> None:
    s = FrameScheduler(["a", "b"])
    s.put("a", 1)
    assert s.discard() == 1
    assert s.drops() == {"a": 1, "b": 0}
    assert s.waiting() == []
    result: list[list] = []
    worker = threading.Thread(target=lambda: result.append(s.take()))
    worker.start()
    s.stop()
    worker.join(timeout=5.0)
    assert not worker.is_alive() and result == [[]]
    s.put("b", 2)
    assert s.take(timeout=0) == [] and s.stopped


def test_timeout_returns_empty_and_bad_arguments_are_refused() -> None:
    s = FrameScheduler(["a"])
    assert s.take(timeout=0.05) == []
    with pytest.raises(InputError, match="unknown camera 'b'"):
        s.put("b", 1)
    with pytest.raises(InputError, match="at least one camera"):
        FrameScheduler([])
    with pytest.raises(InputError, match="listed once.*'a'"):
        FrameScheduler(["a", "b", "a"])
    with pytest.raises(InputError, match="max_rate_hz"):
        FrameScheduler(["a"], max_rate_hz=float("nan"))
